"""Request streams for the autoscaling simulator: arrivals from any CSV with a timestamp column, and the
documented request mixes drawn on top of them with a seed.

Arrivals: one row per request; the first column whose name contains ``time`` or ``date`` (RFC 3339 /
ISO 8601 times, or numbers of seconds). ``ContextTokens`` / ``GeneratedTokens`` columns (the Azure LLM
trace format) give prompt and output lengths; without them lengths are drawn (``LLM_DEFAULT_*``). A
file that is a signal series rather than requests (a carbon-intensity CSV: an intensity column, or
evenly spaced rows minutes apart) is refused with what to pass instead.

Diffusion mix (``DIFFUSION_MIX``): steps 1 / 4 / 20 / 50 (distilled few-step and full samplers), 512 or
1024 px, classifier-free guidance on or off, and three workflows sharing one base model: plain
text-to-image, a LoRA style adapter, a ControlNet; each drawn independently per request.
MoE skew (``EXPERT_POPULARITY``): the share of routed tokens each of 8 experts gets, Zipf with exponent
1.2 (the hottest expert gets 3.4x the average; MoE routers are measured to be this uneven on
domain-specific traffic), the same for every layer.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

LLM_DEFAULT_PROMPT = (800.0, 0.8)  # lognormal median tokens, sigma, when the CSV has no token columns
LLM_DEFAULT_OUTPUT = (150.0, 0.8)
DIFFUSION_MIX = {
    "steps": ((1, 4, 20, 50), (0.25, 0.25, 0.25, 0.25)),
    "pixels": ((512, 1024), (0.5, 0.5)),
    "guidance": ((False, True), (0.5, 0.5)),
    "workflow": (("base", "lora", "control"), (0.5, 0.3, 0.2)),
}
ZIPF_S = 1.2
EXPERT_POPULARITY = tuple(float(x) for x in (np.arange(1, 9) ** -ZIPF_S) / (np.arange(1, 9) ** -ZIPF_S).sum())


class TraceError(ValueError):
    """The --trace file cannot be used as arrivals; the message says why and what to pass."""


@dataclass
class Arrivals:
    t: np.ndarray  # seconds from the first request, sorted
    prompt: np.ndarray
    output: np.ndarray
    name: str = ""
    has_tokens: bool = True

    def __len__(self) -> int:
        return len(self.t)

    def window(self, start_s: float, end_s: float) -> Arrivals:
        i0, i1 = np.searchsorted(self.t, [start_s, end_s])
        return Arrivals(self.t[i0:i1] - start_s, self.prompt[i0:i1], self.output[i0:i1], self.name, self.has_tokens)

    def scaled(self, factor: float) -> Arrivals:
        """Prompts ``factor`` times longer (the crossover map's prompt x4)."""
        return Arrivals(self.t, np.maximum(1, np.round(self.prompt * factor)).astype(int), self.output, self.name,
                        self.has_tokens)


def _parse_time(value: str) -> float:
    v = value.strip()
    try:
        return float(v)
    except ValueError:
        pass
    return datetime.fromisoformat(v[:26].replace("Z", "+00:00")).timestamp()


FIX = ("pass a CSV with one row per request and a timestamp column, e.g. the Azure LLM trace format "
       "TIMESTAMP,ContextTokens,GeneratedTokens (../shared/data/azure-llm-2023/AzureLLMInferenceTrace_conv.csv)")


def load_arrivals(path: str | Path, rate_scale: float = 1.0, seed: int = 0) -> Arrivals:
    """Arrivals of ``path``, ``rate_scale`` times as many per second (time compressed, same shape)."""
    if not (isinstance(rate_scale, int | float) and math.isfinite(rate_scale) and rate_scale > 0):
        raise TraceError(f"--rate-scale must be a positive number (x requests per second, e.g. 10), "
                         f"got {rate_scale}")
    p = Path(path)
    try:
        fh = p.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise TraceError(f"--trace {p}: cannot read it ({exc.strerror or exc}): {FIX}") from None
    with fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header:
            raise TraceError(f"--trace {p} is empty: {FIX}")
        names = [h.strip() for h in header]
        lower = [h.lower() for h in names]
        if any("carbon" in h or "intensity" in h for h in lower):
            raise TraceError(f"--trace {p} is a carbon-intensity series (columns {', '.join(names[:3])}), not "
                             f"request arrivals: {FIX}; carbon CSVs go to `gensched simulate timing --signal`")
        col = next((i for i, h in enumerate(lower) if "time" in h or "date" in h), None)
        if col is None:
            raise TraceError(f"--trace {p} has no timestamp column (columns: {', '.join(names[:6])}): {FIX}")
        ctx = lower.index("contexttokens") if "contexttokens" in lower else None
        gen = lower.index("generatedtokens") if "generatedtokens" in lower else None
        ts, pr, out = [], [], []
        for n, row in enumerate(reader, start=2):
            if not row or not row[col].strip():
                continue
            try:
                ts.append(_parse_time(row[col]))
                if ctx is not None and gen is not None:
                    pr.append(int(float(row[ctx])))
                    out.append(max(1, int(float(row[gen]))))
            except (ValueError, IndexError):
                raise TraceError(f"--trace {p} line {n}: {names[col]} {row[col][:40]!r} is not a time (RFC 3339 "
                                 f"or seconds): {FIX}") from None
    if len(ts) < 2:
        raise TraceError(f"--trace {p} has {len(ts)} request(s): need at least 2 to replay: {FIX}")
    t = np.array(ts)
    order = np.argsort(t, kind="stable")
    t = t[order] - t[order][0]
    gaps = np.diff(t)
    if len(gaps) >= 10 and gaps.min() >= 60 and np.allclose(gaps, gaps[0]):
        raise TraceError(f"--trace {p} has rows evenly {gaps[0] / 60:g} minutes apart: a time series, not "
                         f"requests: {FIX}")
    rng = np.random.default_rng(seed)
    if pr:
        prompt, output, has = np.array(pr)[order], np.array(out)[order], True
    else:
        (pm, ps), (om, os_) = LLM_DEFAULT_PROMPT, LLM_DEFAULT_OUTPUT
        prompt = np.maximum(1, rng.lognormal(math.log(pm), ps, len(t))).astype(int)
        output = np.maximum(1, rng.lognormal(math.log(om), os_, len(t))).astype(int)
        has = False
    return Arrivals(t / rate_scale, prompt, output, p.name, has)


@dataclass
class ImageRequests:
    """The diffusion mix drawn on arrivals: one entry per request."""

    t: np.ndarray
    steps: np.ndarray
    pixels: np.ndarray
    guidance: np.ndarray  # bool
    workflow: np.ndarray  # 0 base, 1 lora, 2 control
    name: str = ""
    latent_factor: int = 8  # pixels per latent pixel (SD: 8)

    def __len__(self) -> int:
        return len(self.t)


WORKFLOWS = DIFFUSION_MIX["workflow"][0]


def diffusion_requests(arr: Arrivals, seed: int = 0) -> ImageRequests:
    rng = np.random.default_rng(seed)
    n = len(arr)

    def draw(key: str) -> np.ndarray:
        values, probs = DIFFUSION_MIX[key]
        return rng.choice(len(values), size=n, p=probs)

    steps = np.array(DIFFUSION_MIX["steps"][0])[draw("steps")]
    pixels = np.array(DIFFUSION_MIX["pixels"][0])[draw("pixels")]
    guidance = draw("guidance").astype(bool)
    workflow = draw("workflow")
    return ImageRequests(arr.t, steps, pixels, guidance, workflow, arr.name)
