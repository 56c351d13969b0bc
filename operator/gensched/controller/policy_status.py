"""SchedulingPolicy status and namespace budgets, computed by the leader's loop about every 10 s.

Per policy: whether its spec is valid (the problems naming each field), whether its carbon signal answers,
and for each ``accounting.budgets`` entry the namespace's use in the current period: the live jobs' ledger
buckets plus the use of jobs deleted during the period (``retired``, kept in this status so that deleting
a job, or restarting the operator, refunds nothing). A namespace whose budget is used up is reported to the
scheduling cycle (``namespace_blocks``): its new work waits with reason BudgetExhausted until the period
rolls over or the budget is raised. Crossing ``warnAt`` and exhaustion post a Warning Event on the policy.

The status is written only when it changed, with the policy's resourceVersion as a precondition (a 409 is
retried on the next tick), and only while this replica may write.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from gensched.accounting import Limits, NamespacePeriod, Usage, evaluate, merge_periods, namespace_usage, retire
from gensched.accounting.periods import period_end, period_start
from gensched.api import SchedulingPolicySpec, format_validation_error
from gensched.api.conditions import set_condition
from gensched.api.durations import rfc3339
from gensched.api.errors import bounded
from gensched.controller import accounting_step, clock, events, telemetry
from gensched.controller.cache import CACHE
from gensched.controller.kube import ApiException, kube

log = logging.getLogger(__name__)
INTERVAL_S = float(os.environ.get("GENSCHED_POLICY_STATUS_SECONDS") or 10.0)  # tests shorten it
MAX_RETIRED_JOBS = 100  # per namespace period; older entries are folded into one ("earlier")


@dataclass(frozen=True)
class NamespaceUse:
    namespace: str
    period: str
    usage: Usage
    limits: Limits
    period_end: datetime
    message: str
    state: str


_lock = threading.Lock()
_last = -1e18
_seen: tuple = ()  # (name, generation) of every policy at the last tick: a change computes at once
_pending: dict[tuple[str, str], NamespacePeriod] = {}  # deleted jobs' use not yet written to a policy status
_use: dict[str, list[NamespaceUse]] = {}
_blocks: dict[str, str] = {}
_probing: set[str] = set()


def namespace_blocks() -> dict[str, str]:
    """Namespaces whose budget is used up -> why (for the scheduling cycle's Pending reason)."""
    with _lock:
        return dict(_blocks)


def namespace_use(ns: str) -> list[NamespaceUse]:
    with _lock:
        return list(_use.get(ns, []))


def retire_job(key: str) -> None:
    """A job was deleted: keep its use in its namespace's current periods (no refund)."""
    known = accounting_step.forget(key)
    if known is None:
        return
    uid, ns, ledger = known
    now = clock.now()
    with _lock:
        for (bns, period) in accounting_step.namespace_budgets():
            if bns != ns:
                continue
            _pending[(ns, period)] = retire(_pending.get((ns, period)), ns, period, now, uid, ledger)
    mark()


def mark() -> None:
    """Compute (and write) at the next tick."""
    global _last
    with _lock:
        _last = -1e18


def _fold(rec: NamespacePeriod) -> NamespacePeriod:
    if len(rec.retired) <= MAX_RETIRED_JOBS:
        return rec
    earlier = Usage()
    for u in rec.retired.values():
        earlier = earlier + u
    return NamespacePeriod(rec.namespace, rec.period, rec.start, {"earlier": earlier})


def tick(may_write) -> None:
    """Called once per loop iteration; does its work at most every ``INTERVAL_S`` (at once on a policy change)."""
    global _last, _seen
    policies = accounting_step.policy_specs()
    seen = tuple((name, p["metadata"].get("generation")) for name, _, p in policies)
    mono = time.monotonic()
    with _lock:
        if seen == _seen and mono - _last < INTERVAL_S:
            return
        _last, _seen = mono, seen
    try:
        _compute(policies, may_write)
    except Exception as exc:  # the policy status never stops the loop
        log.warning("policy status not computed: %s", bounded(exc, 300), exc_info=not accounting_step.expected(exc))


def _compute(policies: list, may_write) -> None:
    now = clock.now()
    budgets = accounting_step.namespace_budgets()
    # deleted jobs' use: what the policies' status holds, plus retirements not yet written there
    retired: dict[tuple[str, str], NamespacePeriod] = {}
    for _, _, p in policies:
        for rec in (p.get("status") or {}).get("retired") or []:
            try:
                got = NamespacePeriod.from_dict(rec)
            except (ValueError, TypeError, KeyError, AttributeError):
                continue
            retired.setdefault((got.namespace, got.period), got)
    with _lock:
        pending = dict(_pending)
    for key, rec in pending.items():
        retired[key] = _fold(merge_periods(retired[key], rec) if key in retired else rec)
    namespaces = {ns for ns, _ in budgets}
    jobs: dict[str, list] = {}
    counts: dict[str, int] = {}
    for gj in CACHE.view("generativejobs"):
        ns = gj["metadata"]["namespace"]
        if ns not in namespaces:
            continue
        ledger = accounting_step.ledger_of(gj)
        if ledger.cursor is None and not ledger.buckets:
            continue
        accounting_step.remember(gj, ledger)  # so that deleting it later retires what it used
        jobs.setdefault(ns, []).append((ns, ledger))
        counts[ns] = counts.get(ns, 0) + 1
    uses: dict[str, list[NamespaceUse]] = {}
    blocks: dict[str, str] = {}
    rows: dict[str, list[dict]] = {}
    for (ns, period), (owner, b) in sorted(budgets.items()):
        limits = Limits(gpu_hours=b.max_gpu_hours, cost=b.max_cost, gco2=b.max_gco2, warn_at=b.warn_at)
        rec = retired.get((ns, period))
        used = namespace_usage(jobs.get(ns, []), period, now, [rec] if rec else []).get(ns, Usage())
        verdict = evaluate(used, limits, f"namespace {ns} budget ({period})")
        start = period_start(now, period)
        n_retired = len(rec.retired) if rec is not None and rec.start == start else 0
        use = NamespaceUse(ns, period, used, limits, period_end(now, period), verdict.message, verdict.state)
        uses.setdefault(ns, []).append(use)
        if verdict.state == "Exhausted":
            blocks[ns] = (f"{verdict.message.replace('raise ', 'raise accounting.budgets[].')} "
                          f"(SchedulingPolicy {owner}): new work of the namespace waits until the period rolls over")
        spec = next((s for n, s, _ in policies if n == owner), None)
        currency = spec.accounting.currency if spec is not None else "USD"
        telemetry.call("record_namespace_usage", ns, period, used, currency)
        telemetry.call("record_budget", ns, None, period, verdict)
        row = {"namespace": ns, "period": period, "periodStart": rfc3339(start), "state": str(verdict.state),
               "usedRatio": round(verdict.used_ratio, 4), "gpuHours": round(used.gpu_hours, 6),
               "cost": round(used.cost, 6), "currency": currency, "gCO2": round(used.gco2, 3),
               "jobs": counts.get(ns, 0) + n_retired, "message": bounded(verdict.message, 1000)}
        if verdict.binding:
            row["limit"] = verdict.binding
        rows.setdefault(owner, []).append(row)
    with _lock:
        _use.clear()
        _use.update(uses)
        _blocks.clear()
        _blocks.update(blocks)
    for name, spec, p in policies:
        if _policy(name, spec, p, rows.get(name, []), retired, now, may_write):
            with _lock:
                for row in rows.get(name, []):
                    key = (row["namespace"], row["period"])
                    if _pending.get(key) is pending.get(key):
                        _pending.pop(key, None)  # written: the status holds it now


def _policy(name: str, spec: SchedulingPolicySpec | None, p: dict, rows: list[dict],
            retired: dict[tuple[str, str], NamespacePeriod], now: datetime, may_write) -> bool:
    """Write one policy's status if it changed; True when what it should hold is written."""
    old = p.get("status") or {}
    gen = p["metadata"].get("generation")
    conds = list(old.get("conditions") or [])
    status: dict = {"observedGeneration": gen}
    if spec is None:
        from pydantic import ValidationError

        try:
            SchedulingPolicySpec.model_validate(p.get("spec") or {})
            problems = "spec could not be read"
        except ValidationError as exc:
            problems = "; ".join(str(e) for e in format_validation_error(exc))
        status.update(valid=False, message=bounded(f"invalid: {problems}; jobs using this policy wait", 4000))
        conds = set_condition(conds, "Valid", False, "InvalidSpec", bounded(problems, 1000), now, gen)
    else:
        status.update(valid=True, message="spec is valid")
        conds = set_condition(conds, "Valid", True, "SpecAccepted", "spec is valid", now, gen)
    carbon = spec.timing.carbon if spec is not None else None
    if carbon is not None:
        cs = _carbon_status(name, spec, now)
        status["carbonSignal"] = cs
        conds = set_condition(conds, "CarbonSignalHealthy", cs["healthy"],
                              "SignalFresh" if cs["healthy"] else "SignalUnavailable",
                              cs.get("message") or cs.get("origin") or "", now, gen)
    else:
        status["carbonSignal"] = None
        conds = [c for c in conds if c.get("type") != "CarbonSignalHealthy"]
    status["conditions"] = conds
    status["budgets"] = rows
    mine = {(r["namespace"], r["period"]) for r in rows}
    status["retired"] = [rec.to_dict() for key, rec in sorted(retired.items()) if key in mine and rec.retired]
    if may_write():
        _events(p, old.get("budgets") or [], rows)
    compare = ("observedGeneration", "valid", "message", "conditions", "carbonSignal", "budgets", "retired")
    if all(_same(old.get(k), status.get(k)) for k in compare):
        return True
    status["updatedAt"] = rfc3339(now)
    if not may_write():
        return False
    try:
        reply = kube().patch_policy_status(name, status, p["metadata"].get("resourceVersion"))
    except ApiException as exc:
        if exc.status in (404, 409):
            mark()  # gone or changed meanwhile: compute again from the newer object
            return False
        log.warning("SchedulingPolicy %s status not written: %s", name, bounded(exc, 200))
        return False
    except Exception as exc:  # timeouts: the next tick tries again
        log.warning("SchedulingPolicy %s status not written: %s", name, bounded(exc, 200))
        mark()
        return False
    if isinstance(reply, dict) and reply.get("metadata"):
        CACHE.observe("policies", "MODIFIED", reply)
    return True


def _same(a: object, b: object) -> bool:
    if isinstance(a, list) and isinstance(b, list) and all(isinstance(x, dict) for x in a + b):
        strip = [{k: v for k, v in x.items() if k != "lastTransitionTime"} for x in a]
        other = [{k: v for k, v in x.items() if k != "lastTransitionTime"} for x in b]
        return strip == other
    return (a or None) == (b or None)


def _events(p: dict, old_rows: list[dict], rows: list[dict]) -> None:
    before = {(r.get("namespace"), r.get("period")): r.get("state") for r in old_rows}
    for r in rows:
        was = before.get((r["namespace"], r["period"]))
        if r["state"] == was or r["state"] == "Ok":
            continue
        if r["state"] == "Warning" and was == "Exhausted":
            continue
        if r["state"] == "Exhausted" and was not in ("Warning", "Exhausted"):  # the warning always comes first
            events.post(p, "Warning", "BudgetWarning", f"namespace {r['namespace']} budget ({r['period']}) passed "
                                                      "warnAt and is exhausted")
            telemetry.decision("BudgetWarning")
        reason = "BudgetExhausted" if r["state"] == "Exhausted" else "BudgetWarning"
        extra = ": new work of the namespace waits" if r["state"] == "Exhausted" else ""
        events.post(p, "Warning", reason, f"{r['message']}{extra}")
        telemetry.decision(reason)


def _carbon_status(name: str, spec: SchedulingPolicySpec, now: datetime) -> dict:
    """Health from the last fetch for accounting; a fetch runs in the background when it is due."""
    series, error, origin = accounting_step.carbon_state(name)
    if name not in _probing:
        _probing.add(name)

        def probe() -> None:
            try:
                accounting_step.carbon_series(name, spec, clock.now())
            finally:
                _probing.discard(name)
                if accounting_step.carbon_state(name)[0] is not series:
                    mark()

        threading.Thread(target=probe, name=f"gensched-carbon-{name}"[:60], daemon=True).start()
    out: dict = {"checkedAt": rfc3339(now)}
    if series is None and error is None:
        return {**out, "healthy": False, "message": "not checked yet"}
    newest = None
    if series is not None and len(series):
        i = min(len(series) - 1, max(0, series.index_at(now)))
        newest = series.time_at(i)
        telemetry.call("record_carbon_signal", name, newest.timestamp())
        out["newestValueAt"] = rfc3339(newest)
    covers = series is not None and 0 <= series.index_at(now) < len(series)
    healthy = error is None and covers
    out["healthy"] = healthy
    if origin:
        out["origin"] = bounded(origin, 500)
    if not healthy:
        out["message"] = bounded(error or f"the signal has no value for now ({rfc3339(now)})", 1000)
    return out
