"""Model operators: contiguous groups of a model's layers, run on their own.

The first operator also embeds tokens; the last also produces logits. Each call is stateless:
the caller passes the operator's KV cache and gets the new one back, so any replica of an
operator can serve any step of any request (what makes per-operator scaling possible).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gensched_workloads.model import KV, DecoderLM


@dataclass(frozen=True)
class OperatorSpec:
    name: str
    first_layer: int
    last_layer: int
    embeds: bool = False
    emits_logits: bool = False


def split(n_layers: int, groups: list[tuple[str, int, int]]) -> list[OperatorSpec]:
    """Operators from (name, first, last) layer ranges; they must cover 0..n_layers-1 once, in order."""
    covered = [i for _, a, b in groups for i in range(a, b + 1)]
    if covered != list(range(n_layers)):
        raise ValueError(f"operators must cover layers 0..{n_layers - 1} exactly once, in order; got {covered}")
    last = len(groups) - 1
    return [OperatorSpec(n, a, b, embeds=i == 0, emits_logits=i == last) for i, (n, a, b) in enumerate(groups)]


class OperatorRunner:
    """Runs one operator of a model (the weights of other layers are not needed, only loaded)."""

    def __init__(self, model: DecoderLM, spec: OperatorSpec) -> None:
        self.model = model
        self.spec = spec

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, start: int, past: list[KV] | None) -> tuple[torch.Tensor, list[KV]]:
        if self.spec.embeds:
            x = self.model.embed(x, start)
        x, kv = self.model.layers(x, self.spec.first_layer, self.spec.last_layer, past)
        if self.spec.emits_logits:
            x = self.model.logits(x)
        return x, kv


@torch.no_grad()
def generate_split(runners: list[OperatorRunner], prompt: list[int], max_new: int, eos: int) -> list[int]:
    """Greedy decoding through the operators in order (the serving path, without Ray)."""
    caches: list[list[KV] | None] = [None] * len(runners)
    max_seq = runners[0].model.cfg.max_seq

    def step(x: torch.Tensor, pos: int) -> torch.Tensor:
        for i, r in enumerate(runners):
            x, caches[i] = r(x, pos, caches[i])
        return x

    logits = step(torch.tensor([prompt]), 0)
    pos, out = len(prompt), []
    while max_new > 0:
        nxt = int(logits[0, -1].argmax())
        out.append(nxt)
        if len(out) == max_new or nxt == eos or pos >= max_seq:
            break
        logits = step(torch.tensor([[nxt]]), pos)
        pos += 1
    return out
