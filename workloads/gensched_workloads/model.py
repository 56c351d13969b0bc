"""A decoder-only transformer language model (pre-norm, causal self-attention, GELU MLP) with a
KV cache, written so that any contiguous range of its layers can run on its own: that is what
lets a serving system deploy and scale groups of layers ("model operators") separately.

Small by default so tests run on a CPU; ``load`` reads real weights saved by ``save``.
No download from a model hub at run time.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

KV = tuple[torch.Tensor, torch.Tensor]  # (keys, values): [batch, heads, seq, head_dim]


@dataclass(frozen=True)
class ModelConfig:
    vocab: int = 260  # 256 byte values + BOS/EOS/PAD/spare
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 4
    d_ff: int = 256
    max_seq: int = 512

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.fc1 = nn.Linear(cfg.d_model, cfg.d_ff)
        self.fc2 = nn.Linear(cfg.d_ff, cfg.d_model)

    def forward(self, x: torch.Tensor, past: KV | None = None) -> tuple[torch.Tensor, KV]:
        x, kv = self.attend(x, past)
        return self.mlp(x), kv

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        """The feed-forward half with its residual (the FFN operator)."""
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.ln2(x))))

    def attend(self, x: torch.Tensor, past: KV | None = None) -> tuple[torch.Tensor, KV]:
        """The attention half with its residual (the Attention operator): new hidden states and KV."""
        b, t, d = x.shape
        h, hd = self.cfg.n_heads, self.cfg.head_dim
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (z.view(b, t, h, hd).transpose(1, 2) for z in (q, k, v))
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        # Causal mask over the full key length: new query i sits at position (past_len + i).
        past_len = k.shape[2] - t
        mask = torch.ones(t, k.shape[2], dtype=torch.bool, device=x.device).tril(diagonal=past_len)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hd)
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, d)
        return x + self.proj(y), (k, v)


class DecoderLM(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab, cfg.d_model)
        self.pos = nn.Embedding(cfg.max_seq, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab, bias=False)

    # -- the pieces a model operator runs
    def embed(self, ids: torch.Tensor, start: int) -> torch.Tensor:
        pos = torch.arange(start, start + ids.shape[1], device=ids.device)
        return self.tok(ids) + self.pos(pos)[None]

    def layers(self, x: torch.Tensor, first: int, last: int, past: list[KV] | None) -> tuple[torch.Tensor, list[KV]]:
        new: list[KV] = []
        for j, i in enumerate(range(first, last + 1)):
            x, kv = self.blocks[i](x, past[j] if past else None)
            new.append(kv)
        return x, new

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.ln_f(x))

    def forward(self, ids: torch.Tensor, past: list[KV] | None = None, start: int = 0) -> tuple[torch.Tensor, list[KV]]:
        x = self.embed(ids, start)
        x, kv = self.layers(x, 0, self.cfg.n_layers - 1, past)
        return self.logits(x), kv

    # -- weights
    def save(self, path: str | Path) -> None:
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        (p / "config.json").write_text(json.dumps(asdict(self.cfg)))
        torch.save(self.state_dict(), p / "weights.pt")

    @classmethod
    def load(cls, path: str | Path) -> DecoderLM:
        p = Path(path)
        model = cls(ModelConfig(**json.loads((p / "config.json").read_text())))
        model.load_state_dict(torch.load(p / "weights.pt", map_location="cpu", weights_only=True))
        return model.eval()

    @classmethod
    def seeded(cls, cfg: ModelConfig | None = None, seed: int = 0) -> DecoderLM:
        """Deterministic random weights: every process building it gets the same model."""
        torch.manual_seed(seed)
        return cls(cfg or ModelConfig()).eval()


BOS, EOS = 256, 257


def encode(text: str) -> list[int]:
    """Byte-level tokenizer: no vocabulary file to download."""
    return [BOS, *text.encode("utf-8")]


def decode(ids: list[int]) -> str:
    return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


@torch.no_grad()
def generate(model: DecoderLM, prompt: list[int], max_new: int) -> list[int]:
    """Greedy decoding with a KV cache (the reference the split serving path must match)."""
    ids = torch.tensor([prompt])
    logits, past = model(ids)
    out: list[int] = []
    pos = len(prompt)
    for _ in range(max_new):
        nxt = int(logits[0, -1].argmax())
        out.append(nxt)
        if nxt == EOS or pos >= model.cfg.max_seq:
            break
        logits, past = model(torch.tensor([[nxt]]), past, start=pos)
        pos += 1
    return out
