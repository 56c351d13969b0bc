"""What a job used, from samples the operator takes while it runs (pure; no Kubernetes, no network).

The model is sample-and-hold: a ``Sample`` says what the job held at instant ``t`` (GPUs, GPU
model) and what its counters read (DCGM energy, outputs). The state observed at one sample holds
until the next one, so the interval between two samples is charged with the earlier sample's GPUs,
power and utilisation, and with the counters' difference.

Energy of an interval, in order of preference:
1. **measured counter**: difference of the DCGM energy counters (``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION``
   summed over the job's GPUs, converted to joules) at both ends;
2. **measured power**: DCGM power (watts, summed over the job's GPUs) at the interval's start x its length;
3. **modelled**: GPUs x the GPU model's TDP (``timing.energy``) x utilisation (measured when the sample
   has it, else the policy's ``timing.gpuUtilization``) x length.

Counters that go backwards are resets (a GPU or exporter restarted, the pod moved to other GPUs):
- an energy counter that goes backwards, or jumps by more than twice the GPUs' TDP could draw, is not
  trusted for that interval: the interval falls back to measured power, else the model, and counting
  resumes from the new value;
- an output counter that goes backwards restarted from zero (the workload restarted): its new value is
  what was produced since, as Prometheus' ``increase()`` assumes. An output counter that disappears keeps
  its last value, so one that comes back is not counted twice.

Nothing here ever lowers a total: samples at or before the last one are ignored, non-finite or negative
readings are treated as missing, and ``merge`` of two records keeps the larger of every total.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta

from gensched.accounting.periods import period_start, split_by_period
from gensched.accounting.signals import Signal, mean_over
from gensched.timing.energy import tdp_watts
from gensched.timing.series import as_utc

J_PER_KWH = 3.6e6
PLAUSIBLE_TDP_FACTOR = 2.0  # energy above GPUs x TDP x this factor over an interval is not a real reading


def _num(x: float | None) -> float | None:
    """A finite, non-negative reading, else None (missing)."""
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v >= 0 else None


@dataclass(frozen=True)
class Sample:
    """One observation of a job at ``t``. Every reading is optional except the time."""

    t: datetime
    gpus: float = 0.0  # GPUs held from now on (shares count as fractions)
    gpu_model: str | None = None  # nvidia.com/gpu.product of the GPUs held
    energy_joules: float | None = None  # DCGM energy counter, summed over the job's GPUs, in joules
    power_watts: float | None = None  # DCGM power draw, summed over the job's GPUs
    utilization: float | None = None  # mean GPU utilisation 0..1 (DCGM_FI_DEV_GPU_UTIL / 100)
    outputs: float | None = None  # cumulative useful outputs (items, tokens or requests)


@dataclass(frozen=True)
class Usage:
    """Additive amounts used over some span. Every field only ever grows in a ledger."""

    gpu_seconds: float = 0.0
    measured_joules: float = 0.0
    modelled_joules: float = 0.0
    gco2: float = 0.0
    gpu_cost: float = 0.0  # GPU-hours x price per GPU-hour of the GPU model
    energy_cost: float = 0.0  # kWh x electricity price at the time
    outputs: float = 0.0
    unpriced_gpu_seconds: float = 0.0  # GPU time of a model without a price
    uncarboned_joules: float = 0.0  # energy used while no carbon intensity was known

    @property
    def joules(self) -> float:
        return self.measured_joules + self.modelled_joules

    @property
    def kwh(self) -> float:
        return self.joules / J_PER_KWH

    @property
    def gpu_hours(self) -> float:
        return self.gpu_seconds / 3600.0

    @property
    def cost(self) -> float:
        return self.gpu_cost + self.energy_cost

    def __add__(self, other: Usage) -> Usage:
        return Usage(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def scaled(self, k: float) -> Usage:
        return Usage(**{f.name: getattr(self, f.name) * k for f in fields(self)})

    def joined(self, other: Usage) -> Usage:
        """The larger of each amount (what two copies of one record agree was used at least)."""
        return Usage(**{f.name: max(getattr(self, f.name), getattr(other, f.name)) for f in fields(self)})

    def covers(self, other: Usage) -> bool:
        """Every amount is at least ``other``'s."""
        return all(getattr(self, f.name) >= getattr(other, f.name) for f in fields(self))

    def to_dict(self) -> dict[str, float]:
        """Wire form; zero amounts are left out (they read back as zero)."""
        return {_camel(f.name): getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}

    @classmethod
    def from_dict(cls, d: Mapping[str, object] | None) -> Usage:
        d = d or {}
        return cls(**{f.name: _num(d.get(_camel(f.name))) or 0.0 for f in fields(cls)})  # type: ignore[arg-type]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    out = head + "".join(w.capitalize() for w in rest)
    return out.replace("Gco2", "GCO2").replace("gco2", "gCO2")


@dataclass(frozen=True)
class Prices:
    """What an interval costs and emits; built from the SchedulingPolicy by the controller.

    ``per_gpu_hour`` maps GPU model names to a price; a GPU product label matches the longest key it
    contains (``A100`` matches ``NVIDIA-A100-SXM4-80GB``), the same rule as the TDP table.
    """

    per_gpu_hour: Mapping[str, float] = field(default_factory=dict)
    default_per_gpu_hour: float | None = None
    electricity_per_kwh: Signal | None = None  # add energy cost at the price of the time
    carbon_intensity: Signal | None = None  # gCO2/kWh
    utilization: float = 0.7  # modelled power share of TDP (timing.gpuUtilization)
    periods: tuple[str, ...] = ()  # budget periods to keep a current-period bucket for ("24h", "Month")

    def gpu_hour_price(self, gpu_model: str | None) -> float | None:
        name = (gpu_model or "").upper()
        best = ""
        for key in self.per_gpu_hour:
            if key and key.upper() in name and len(key) > len(best):
                best = key
        if best:
            return float(self.per_gpu_hour[best])
        return self.default_per_gpu_hour

    @property
    def priced(self) -> bool:
        return bool(self.per_gpu_hour) or self.default_per_gpu_hour is not None or self.electricity_per_kwh is not None


@dataclass(frozen=True)
class Cursor:
    """The last sample taken into account: where the next interval starts."""

    t: datetime
    gpus: float = 0.0
    gpu_model: str | None = None
    energy_joules: float | None = None
    power_watts: float | None = None
    utilization: float | None = None
    outputs: float | None = None  # carried forward when a sample lacks it


@dataclass(frozen=True)
class Bucket:
    """Usage inside the current period of one length (budgets per period)."""

    period: str
    start: datetime
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True)
class Ledger:
    """Everything recorded about one job; serialisable into ``status.accounting.ledger``."""

    total: Usage = field(default_factory=Usage)
    cursor: Cursor | None = None
    buckets: tuple[Bucket, ...] = ()
    energy_resets: int = 0
    output_resets: int = 0
    started_at: datetime | None = None
    final: bool = False

    def bucket(self, period: str, at: datetime) -> Usage:
        """Usage in the period of length ``period`` containing ``at`` (zero when none recorded)."""
        start = period_start(at, period)
        for b in self.buckets:
            if b.period == period and b.start == start:
                return b.usage
        return Usage()

    # -- persistence -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-safe record (camelCase, RFC 3339 times) matching ``api.accounting.AccountingLedger``."""
        out: dict = {"total": self.total.to_dict(), "energyResets": self.energy_resets,
                     "outputResets": self.output_resets, "final": self.final}
        if self.started_at is not None:
            out["startedAt"] = _iso(self.started_at)
        if self.cursor is not None:
            c = self.cursor
            cur: dict = {"t": _iso(c.t), "gpus": c.gpus}
            for key, val in (("gpuModel", c.gpu_model), ("energyJoules", c.energy_joules),
                             ("powerWatts", c.power_watts), ("utilization", c.utilization), ("outputs", c.outputs)):
                if val is not None:
                    cur[key] = val
            out["cursor"] = cur
        if self.buckets:
            out["buckets"] = [{"period": b.period, "start": _iso(b.start), "usage": b.usage.to_dict()}
                              for b in self.buckets]
        return out

    @classmethod
    def from_dict(cls, d: Mapping | None) -> Ledger:
        """Read a stored record; unreadable parts are dropped, never guessed (so nothing is counted twice:
        a missing cursor only means the next sample starts a new interval)."""
        if not d:
            return cls()
        cursor = None
        c = d.get("cursor")
        if isinstance(c, Mapping) and _when(c.get("t")) is not None:
            cursor = Cursor(t=_when(c["t"]), gpus=_num(c.get("gpus")) or 0.0,  # type: ignore[arg-type]
                            gpu_model=c.get("gpuModel") if isinstance(c.get("gpuModel"), str) else None,
                            energy_joules=_num(c.get("energyJoules")), power_watts=_num(c.get("powerWatts")),
                            utilization=_num(c.get("utilization")), outputs=_num(c.get("outputs")))
        buckets = []
        for b in d.get("buckets") or []:
            if isinstance(b, Mapping) and isinstance(b.get("period"), str) and _when(b.get("start")) is not None:
                buckets.append(Bucket(b["period"], _when(b["start"]), Usage.from_dict(b.get("usage"))))  # type: ignore[arg-type]
        return cls(total=Usage.from_dict(d.get("total")), cursor=cursor, buckets=tuple(buckets),
                   energy_resets=int(_num(d.get("energyResets")) or 0),
                   output_resets=int(_num(d.get("outputResets")) or 0),
                   started_at=_when(d.get("startedAt")), final=d.get("final") is True)


def _iso(t: datetime) -> str:
    return as_utc(t).isoformat().replace("+00:00", "Z")


def _when(x: object) -> datetime | None:
    if isinstance(x, datetime):
        return as_utc(x)
    if not isinstance(x, str):
        return None
    try:
        t = datetime.fromisoformat(x.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t.astimezone(UTC) if t.tzinfo else t.replace(tzinfo=UTC)


# -- accounting ---------------------------------------------------------------------------------
def _cursor(s: Sample, prev: Cursor | None) -> Cursor:
    outputs = _num(s.outputs)
    if outputs is None and prev is not None:
        outputs = prev.outputs
    util = _num(s.utilization)
    return Cursor(t=as_utc(s.t), gpus=_num(s.gpus) or 0.0, gpu_model=s.gpu_model,
                  energy_joules=_num(s.energy_joules), power_watts=_num(s.power_watts),
                  utilization=util if util is not None and util <= 1 else None, outputs=outputs)


def interval_usage(c: Cursor, nxt: Cursor, prices: Prices) -> tuple[Usage, bool, bool]:
    """Usage of ``[c.t, nxt.t)``; also whether the energy and the output counters were reset."""
    dt = (nxt.t - c.t).total_seconds()
    g = c.gpus
    tdp = tdp_watts(c.gpu_model)
    measured = modelled = 0.0
    energy_reset = counted = False
    if c.energy_joules is not None and nxt.energy_joules is not None:
        d = nxt.energy_joules - c.energy_joules
        if 0 <= d <= g * tdp * PLAUSIBLE_TDP_FACTOR * dt:
            measured, counted = d, True
        else:
            energy_reset = True
    if not counted:
        if c.power_watts is not None:
            measured = c.power_watts * dt
        else:
            util = c.utilization if c.utilization is not None else prices.utilization
            modelled = g * tdp * util * dt
    outputs, output_reset = 0.0, False
    if nxt.outputs is not None:
        if c.outputs is None:
            outputs = nxt.outputs  # the counter counts from the workload's start
        elif nxt.outputs >= c.outputs:
            outputs = nxt.outputs - c.outputs
        else:
            outputs, output_reset = nxt.outputs, True
    joules = measured + modelled
    kwh = joules / J_PER_KWH
    carbon = mean_over(prices.carbon_intensity, c.t, nxt.t)
    gpu_price = prices.gpu_hour_price(c.gpu_model)
    power_price = mean_over(prices.electricity_per_kwh, c.t, nxt.t)
    usage = Usage(
        gpu_seconds=g * dt, measured_joules=measured, modelled_joules=modelled,
        gco2=kwh * carbon.covered * carbon.value, uncarboned_joules=joules * (1 - carbon.covered),
        gpu_cost=(gpu_price or 0.0) * g * dt / 3600.0, unpriced_gpu_seconds=0.0 if gpu_price is not None else g * dt,
        energy_cost=kwh * power_price.covered * power_price.value, outputs=outputs)
    return usage, energy_reset, output_reset


def advance(ledger: Ledger, sample: Sample, prices: Prices) -> Ledger:
    """The ledger with ``sample`` taken into account (a new one; the input is not changed)."""
    if ledger.final:
        return ledger
    t = as_utc(sample.t)
    if ledger.cursor is None:
        first = _cursor(sample, None)  # an output counter already running counts from the workload's start
        return replace(ledger, cursor=first, started_at=ledger.started_at or t,
                       total=ledger.total + Usage(outputs=first.outputs or 0.0))
    if t <= ledger.cursor.t:
        return ledger  # late or repeated sample: the ledger never goes back
    nxt = _cursor(sample, ledger.cursor)
    usage, e_reset, o_reset = interval_usage(ledger.cursor, nxt, prices)
    return replace(ledger, total=ledger.total + usage, cursor=nxt,
                   buckets=_bucketed(ledger.buckets, ledger.cursor.t, t, usage, prices.periods),
                   energy_resets=ledger.energy_resets + e_reset, output_resets=ledger.output_resets + o_reset)


def _bucketed(buckets: tuple[Bucket, ...], t0: datetime, t1: datetime, usage: Usage,
              periods: tuple[str, ...]) -> tuple[Bucket, ...]:
    """Add the part of ``usage`` that falls into each period's current bucket (pro rata in time);
    keep one bucket per period, the current one."""
    out = {b.period: b for b in buckets if b.period not in periods}  # periods no longer asked for stay
    span = (t1 - t0).total_seconds()
    for period in periods:
        current = period_start(t1 - timedelta(microseconds=1), period)
        old = next((b for b in buckets if b.period == period), None)
        acc = old.usage if old is not None and old.start == current else Usage()
        for a, b in split_by_period(t0, t1, period):
            if period_start(a, period) == current:
                acc = acc + usage.scaled((b - a).total_seconds() / span)
        out[period] = Bucket(period, current, acc)
    return tuple(sorted(out.values(), key=lambda b: b.period))


def replay(samples: list[Sample], prices: Prices, ledger: Ledger | None = None) -> Ledger:
    """Fold samples (any order; they are sorted) into a ledger."""
    out = ledger or Ledger()
    for s in sorted(samples, key=lambda s: as_utc(s.t)):
        out = advance(out, s, prices)
    return out


def finalize(ledger: Ledger) -> Ledger:
    """Mark the record final (the job ended); later samples are ignored."""
    return replace(ledger, final=True)


def merge(a: Ledger, b: Ledger) -> Ledger:
    """Join two copies of one job's record (e.g. the status read after a restart and the memory of the
    writer): the larger of every total, so no recorded usage is lost; the later cursor. Commutative,
    associative and idempotent."""
    if a.cursor is None or b.cursor is None:
        cursor = a.cursor or b.cursor
    else:
        cursor = max((a.cursor, b.cursor), key=lambda c: (c.t, repr(c)))
    by_period: dict[str, Bucket] = {}
    for bk in (*a.buckets, *b.buckets):
        have = by_period.get(bk.period)
        if have is None or bk.start > have.start:
            by_period[bk.period] = bk
        elif bk.start == have.start:
            by_period[bk.period] = Bucket(bk.period, bk.start, have.usage.joined(bk.usage))
    starts = [x for x in (a.started_at, b.started_at) if x is not None]
    return Ledger(total=a.total.joined(b.total), cursor=cursor,
                  buckets=tuple(sorted(by_period.values(), key=lambda x: x.period)),
                  energy_resets=max(a.energy_resets, b.energy_resets),
                  output_resets=max(a.output_resets, b.output_resets),
                  started_at=min(starts) if starts else None, final=a.final or b.final)
