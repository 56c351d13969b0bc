"""Latency and memory profiles of model operators, measured (workloads profiler) or modelled
(roofline). Times are for one whole GPU of the profile's type. How a share of a GPU runs is
``opmodel.py`` (two axes: compute scales with the share, memory-bound time with the bandwidth the
share reaches); the linear fields below are what the operator's sizing (``targets.py``) reads.

Optional, for operators whose latency is not a line in the batch (diffusion stages) or that run
beside others: ``points`` (measured or modelled rows ``batch, ctx, total_ms[, compute_ms,
memory_ms, host_ms]``; ``ctx`` is context tokens for language models, latent tokens for diffusion),
``act_gib_per_kctx`` (activation memory per batch item per 1,000 ctx tokens), ``group`` (operators of
one group run side by side, e.g. the experts of a layer), ``type`` (the operator type) and
``tp_base_ms`` / ``tp_per_seq_ms`` (all-reduce per iteration of a replica spanning several GPUs).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


class ProfileError(ValueError):
    """A profile cannot serve the request; the message names the operator and the nearest fix."""


@dataclass(frozen=True)
class OperatorProfile:
    name: str
    weights_gib: float
    kv_gib_per_token: float  # KV cache this operator keeps per context token of a sequence
    step_base_ms: float  # one decode step at batch 1, ~0 context (weight reads, launches)
    step_per_seq_ms: float  # added per sequence in the batch (compute)
    step_per_kctx_ms: float  # added per sequence per 1,000 context tokens (KV reads)
    prefill_base_ms: float
    prefill_per_token_ms: float
    hop_ms: float = 0.0  # moving activations to the next operator (separate deployments only)
    type: str = ""
    group: str = ""
    points: tuple[tuple[float, ...], ...] = ()
    act_gib_per_kctx: float = 0.0
    tp_base_ms: float = 0.0
    tp_per_seq_ms: float = 0.0

    def step_ms(self, batch: float, ctx_tokens: float) -> float:
        if batch <= 0:
            return 0.0
        return self.step_base_ms + batch * (self.step_per_seq_ms + ctx_tokens / 1000 * self.step_per_kctx_ms)

    def prefill_ms(self, tokens: float) -> float:
        return self.prefill_base_ms + tokens * self.prefill_per_token_ms if tokens > 0 else 0.0

    def memory_gib(self, batch: float, ctx_tokens: float) -> float:
        return self.weights_gib + batch * ctx_tokens * self.kv_gib_per_token


@dataclass(frozen=True)
class ModelProfile:
    model: str
    gpu: str
    gpu_memory_gib: float
    gpu_watts: float  # board power at full use
    idle_watts: float  # drawn by an allocated but idle GPU (pro rata for shares)
    operators: tuple[OperatorProfile, ...]
    modelled: bool = True
    source: str = ""
    load_gib_per_s: float = 2.0  # weight loading speed when a replica starts
    start_s: float = 5.0  # fixed start-up cost of a replica
    notes: list[str] = field(default_factory=list)

    def names(self) -> list[str]:
        return [o.name for o in self.operators]

    def whole(self) -> OperatorProfile:
        """The model as one operator (model-level replicas): no hops between operators."""
        ops = self.operators
        return OperatorProfile(
            "model", sum(o.weights_gib for o in ops), sum(o.kv_gib_per_token for o in ops),
            sum(o.step_base_ms for o in ops), sum(o.step_per_seq_ms for o in ops),
            sum(o.step_per_kctx_ms for o in ops), sum(o.prefill_base_ms for o in ops),
            sum(o.prefill_per_token_ms for o in ops), 0.0, "Model", "", (), sum(o.act_gib_per_kctx for o in ops),
            sum(o.tp_base_ms for o in ops), sum(o.tp_per_seq_ms for o in ops))

    def start_seconds(self, op: OperatorProfile) -> float:
        return self.start_s + op.weights_gib / self.load_gib_per_s

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: str | Path, expect: list[str] | None = None) -> ModelProfile:
        return cls.from_json(Path(path).read_text(), expect, where=f"profile {path}")

    @classmethod
    def from_json(cls, text: str, expect: list[str] | None = None, where: str = "the profile") -> ModelProfile:
        """Parse a profile (the profiler's JSON); ``expect``: operator names it must cover."""
        try:
            raw = json.loads(text)
            ops = tuple(OperatorProfile(**{**o, "points": tuple(tuple(float(v) for v in row)
                                                                 for row in o.get("points", ()))})
                        for o in raw.pop("operators"))
            prof = cls(operators=ops, **raw)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ProfileError(f"{where} is not a gensched profile ({exc.__class__.__name__}: {exc}): write it "
                               "with `python -m gensched_workloads.profiler --out profile.json`") from exc
        if expect is not None:
            missing = [n for n in expect if n not in prof.names()]
            if missing:
                raise ProfileError(f"{where} has no entry for operator(s) {missing}; it has {prof.names()}: "
                                   "re-run the profiler with these operators or rename spec.serve.operators")
        return prof
