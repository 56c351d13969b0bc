"""What one replica of each model operator is sized for, from its profile and the TBT SLO (pure).

A token passes every operator once, so the TBT budget (``HEADROOM`` x ``tbtMs``) is split between
operators in proportion to their profiled batch-1 step time: heavy operators get more of it. A replica
serves ``b`` sequences in one step of ``base + b x (per_seq + ctx/1000 x per_kctx)``; the largest
``b`` whose step fits the operator's budget is the requests in flight one replica is sized for. The
control loop (``policy.py``) then scales each operator to in-flight / that target, and adds a replica
when the observed p99 step exceeds the budget. So a heavy operator scales out before a light one
under the same load, which is the point of scaling per operator.

Profiles from a GPU are for a whole GPU; a replica holding a share ``s`` runs ``1/s`` slower (the
same model as ``profiles.py``). CPU profiles (``gpu: cpu``) are taken as measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gensched.autoscale.profiles import ModelProfile, ProfileError
from gensched.autoscale.sizing import HEADROOM

MAX_TARGET = 4096  # an operator whose step does not grow with the batch is still not infinite


@dataclass(frozen=True)
class OperatorTarget:
    name: str
    target_ongoing: int  # sequences one replica serves within its budget
    budget_ms: float  # its share of the TBT SLO
    step_ms: float  # its step at that batch


def operator_targets(profile: ModelProfile, shares: dict[str, float], tbt_ms: float, ctx_tokens: float
                     ) -> dict[str, OperatorTarget]:
    """Per-operator targets for the deployed operators ``shares`` (name -> GPU share per replica).

    Raises ProfileError naming what is missing, or the smallest ``tbtMs`` the profile can meet.
    """
    if tbt_ms <= 0 or ctx_tokens < 0:
        raise ProfileError(f"tbtMs must be > 0 and contextTokens >= 0, got {tbt_ms} and {ctx_tokens}")
    by_name = {op.name: op for op in profile.operators}
    missing = [n for n in shares if n not in by_name]
    if missing:
        raise ProfileError(f"the profile has no entry for operator(s) {missing}; it has {profile.names()}: re-run "
                           "the profiler with these operators or rename spec.serve.operators")
    on_gpu = profile.gpu.lower() != "cpu"
    slow = {n: (1 / s if on_gpu and s > 0 else 1.0) for n, s in shares.items()}
    one = {n: by_name[n].step_ms(1, ctx_tokens) * slow[n] for n in shares}
    total = sum(one.values())
    budget_all = HEADROOM * tbt_ms
    if total > budget_all:
        what = profile.source or profile.model
        raise ProfileError(f"one token takes {total:.1f} ms across the operators at batch 1 ({what} on "
                           f"{profile.gpu}), more than {HEADROOM:.0%} of tbtMs {tbt_ms:g}: set "
                           f"spec.serve.slo.tbtMs >= {math.ceil(total / HEADROOM)} or give the operators larger GPU "
                           "shares")
    out: dict[str, OperatorTarget] = {}
    for n in shares:
        op = by_name[n]
        budget = budget_all * one[n] / total if total > 0 else budget_all / len(shares)
        per = (op.step_per_seq_ms + ctx_tokens / 1000 * op.step_per_kctx_ms) * slow[n]
        base = op.step_base_ms * slow[n]
        b = MAX_TARGET if per <= 0 else int(max(1.0, min(MAX_TARGET, (budget - base) / per + 1e-9)))
        out[n] = OperatorTarget(n, b, budget, base + b * per)
    return out
