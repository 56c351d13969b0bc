"""From a ledger to what people read: status.accounting, derived ratios, and notes on fallbacks."""

from __future__ import annotations

from dataclasses import dataclass

from gensched.accounting.budgets import BudgetVerdict
from gensched.accounting.usage import Ledger, Prices, Usage
from gensched.api.accounting import EnergySource


def energy_source(u: Usage) -> EnergySource | None:
    if u.measured_joules > 0 and u.modelled_joules > 0:
        return EnergySource.MIXED
    if u.measured_joules > 0:
        return EnergySource.MEASURED
    if u.modelled_joules > 0:
        return EnergySource.MODELLED
    return None


@dataclass(frozen=True)
class Yield:
    """What the use bought: None where the denominator is zero."""

    cost_per_output: float | None
    gpu_seconds_per_output: float | None
    outputs_per_kwh: float | None


def yield_of(u: Usage) -> Yield:
    return Yield(cost_per_output=u.cost / u.outputs if u.outputs > 0 else None,
                 gpu_seconds_per_output=u.gpu_seconds / u.outputs if u.outputs > 0 else None,
                 outputs_per_kwh=u.outputs / u.kwh if u.kwh > 0 else None)


def notes(ledger: Ledger, prices: Prices) -> list[str]:
    """The documented fallbacks in effect, in words (for a condition message)."""
    u = ledger.total
    out: list[str] = []
    src = energy_source(u)
    if src == EnergySource.MODELLED:
        out.append("energy modelled from TDP x utilisation (no DCGM readings for this job)")
    elif src == EnergySource.MIXED:
        out.append(f"energy {100 * u.modelled_joules / u.joules:.0f}% modelled where DCGM readings were missing")
    if u.uncarboned_joules > 0:
        out.append(f"{u.uncarboned_joules / 3.6e6:.3g} kWh used with no carbon intensity known: not in gCO2")
    if u.unpriced_gpu_seconds > 0:
        model = ledger.cursor.gpu_model if ledger.cursor else None
        out.append(f"{u.unpriced_gpu_seconds / 3600:.3g} GPU-hours without a price"
                   + (f" (GPU model {model}: add it to accounting.pricing)" if model else ""))
    if ledger.energy_resets:
        out.append(f"DCGM energy counter reset or jumped {ledger.energy_resets}x: those intervals fell back")
    if ledger.output_resets:
        out.append(f"output counter went backwards {ledger.output_resets}x: counted as restarts from zero")
    if not prices.priced:
        out.append("no prices set (accounting.pricing): cost not computed")
    return out


def _r(x: float | None, digits: int = 6) -> float | None:
    return None if x is None else float(f"{x:.{digits}g}")


def to_status(ledger: Ledger, prices: Prices, currency: str, output_unit: str | None = None,
              budget: BudgetVerdict | None = None) -> dict:
    """``status.accounting`` in wire form (camelCase; see api/accounting.py AccountingStatus)."""
    u = ledger.total
    y = yield_of(u)
    out: dict = {"gpuHours": _r(u.gpu_hours), "energyKWh": _r(u.kwh), "final": ledger.final,
                 "ledger": ledger.to_dict()}
    src = energy_source(u)
    if src is not None:
        out["energySource"] = src.value
    if prices.carbon_intensity is not None:
        out["gCO2"] = _r(u.gco2)
    if prices.priced:
        out["cost"] = _r(u.cost)
        out["currency"] = currency
    if u.outputs > 0 or (ledger.cursor is not None and ledger.cursor.outputs is not None):
        out["outputs"] = _r(u.outputs)
    if output_unit:
        out["outputUnit"] = output_unit
    for key, val in (("costPerOutput", y.cost_per_output if prices.priced else None),
                     ("gpuSecondsPerOutput", y.gpu_seconds_per_output), ("outputsPerKWh", y.outputs_per_kwh)):
        if val is not None:
            out[key] = _r(val)
    if budget is not None:
        out["budget"] = {"state": budget.state.value, "usedRatio": _r(budget.used_ratio, 4),
                         "message": budget.message}
        if budget.binding:
            out["budget"]["limit"] = budget.binding
    found = notes(ledger, prices)
    if found:
        out["notes"] = found
    return {k: v for k, v in out.items() if v is not None}
