"""What each job costs and yields (pure: no Kubernetes, kopf or network code).

- ``usage``: samples -> a per-job ``Ledger`` (GPU-seconds, measured or modelled energy, gCO2, cost,
  outputs), JSON-serialisable for ``status.accounting.ledger``, with a ``merge`` that never loses usage;
- ``budgets``: limits per job and per namespace and period, states Ok / Warning / Exhausted;
- ``breaker``: the serving circuit breaker (spend growing faster than output, or a budget rate);
- ``summary``: ``status.accounting`` and the derived cost per output, GPU-seconds per output, outputs per kWh;
- ``periods``: UTC-aligned budget periods; ``dcgm``: PromQL for DCGM exporter metrics of a job's pods.
"""

from gensched.accounting.breaker import BreakerReason, BreakerVerdict, ServeSample, circuit_breaker, latch
from gensched.accounting.budgets import (
    BudgetState,
    BudgetVerdict,
    Limits,
    NamespacePeriod,
    evaluate,
    merge_periods,
    namespace_usage,
    retire,
    seconds_to_exhaustion,
    totals_by_namespace,
)
from gensched.accounting.periods import MONTH, period_end, period_start, split_by_period
from gensched.accounting.summary import EnergySource, Yield, energy_source, notes, to_status, yield_of
from gensched.accounting.usage import Ledger, Prices, Sample, Usage, advance, finalize, merge, replay

__all__ = [
    "MONTH",
    "BreakerReason",
    "BreakerVerdict",
    "BudgetState",
    "BudgetVerdict",
    "EnergySource",
    "Ledger",
    "Limits",
    "NamespacePeriod",
    "Prices",
    "Sample",
    "ServeSample",
    "Usage",
    "Yield",
    "advance",
    "circuit_breaker",
    "energy_source",
    "evaluate",
    "finalize",
    "latch",
    "merge",
    "merge_periods",
    "namespace_usage",
    "notes",
    "period_end",
    "period_start",
    "replay",
    "retire",
    "seconds_to_exhaustion",
    "split_by_period",
    "to_status",
    "totals_by_namespace",
    "yield_of",
]
