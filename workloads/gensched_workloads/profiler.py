"""Measure each model operator's latency against batch size and context length on this device and
write a profile (the format of ``gensched.autoscale.profiles.ModelProfile``, ``modelled: false``).

    python -m gensched_workloads.profiler --operators early:0-1,late:2-3 --out profile.json
    python -m gensched_workloads.profiler --workload diffusion --config toy --grid 1x16,2x16,1x32 --out p.json
    python -m gensched_workloads.profiler --workload moe --experts hot:0-1,cold:2-7 --out p.json

Operator names must be the job's (``spec.serve.operators[].name``): ``--rename denoiser=unet,...`` renames
the diffusion operators (text-encoder, denoiser, controlnet, vae-decoder); the MoE's are ``embedding``,
``attention`` and the ``--experts`` group names. For diffusion, ``ctx`` is latent tokens
(``contextTokens`` of ``spec.serve.profile``).

Decode steps are timed at several batch sizes and KV-cache lengths, prefill at several prompt
lengths; least squares fits ``base + batch x (per_seq + ctx/1000 x per_kctx)`` and ``base + tokens x
per_token``. Medians of ``--repeats`` runs; the fit's R^2 is recorded in the notes.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from gensched.autoscale.profiles import ModelProfile, OperatorProfile
from gensched_workloads.model import DecoderLM
from gensched_workloads.operators import OperatorRunner, OperatorSpec, split

GIB = 1024**3


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def _kv(model: DecoderLM, spec: OperatorSpec, batch: int, ctx: int) -> list:
    c = model.cfg
    shape = (batch, c.n_heads, ctx, c.head_dim)
    return [(torch.randn(shape), torch.randn(shape)) for _ in range(spec.first_layer, spec.last_layer + 1)]


@torch.no_grad()
def profile_operator(model: DecoderLM, spec: OperatorSpec, batches: list[int], contexts: list[int],
                     prompts: list[int], repeats: int) -> tuple[OperatorProfile, float]:
    runner = OperatorRunner(model, spec)
    d = model.cfg.d_model
    rows, ys = [], []
    for b in batches:
        for ctx in contexts:
            x = torch.randint(0, 256, (b, 1)) if spec.embeds else torch.randn(b, 1, d)
            past = _kv(model, spec, b, ctx)
            ys.append(_time(lambda x=x, past=past, ctx=ctx: runner(x, ctx, past), repeats))
            rows.append([1.0, b, b * ctx / 1000])
    coef, *_ = np.linalg.lstsq(np.array(rows), np.array(ys), rcond=None)
    fitted = np.array(rows) @ coef
    r2 = 1 - float(np.sum((np.array(ys) - fitted) ** 2) / max(np.sum((np.array(ys) - np.mean(ys)) ** 2), 1e-12))
    pre_x, pre_y = [], []
    for n in prompts:
        x = torch.randint(0, 256, (1, n)) if spec.embeds else torch.randn(1, n, d)
        pre_y.append(_time(lambda x=x: runner(x, 0, None), repeats))
        pre_x.append([1.0, n])
    pc, *_ = np.linalg.lstsq(np.array(pre_x), np.array(pre_y), rcond=None)
    layers = spec.last_layer - spec.first_layer + 1
    c = model.cfg
    params = sum(p.numel() for i in range(spec.first_layer, spec.last_layer + 1) for p in model.blocks[i].parameters())
    if spec.embeds:
        params += model.tok.weight.numel() + model.pos.weight.numel()
    if spec.emits_logits:
        params += model.head.weight.numel() + sum(p.numel() for p in model.ln_f.parameters())
    kv_per_token = layers * 2 * c.d_model * 4  # K and V, fp32
    op = OperatorProfile(spec.name, params * 4 / GIB, kv_per_token / GIB, max(coef[0], 0.0), max(coef[1], 0.0),
                         max(coef[2], 0.0), max(pc[0], 0.0), max(pc[1], 0.0), 0.0)
    return op, r2


def _renamed(prof: ModelProfile, spec: str | None) -> ModelProfile:
    if not spec:
        return prof
    names = dict(item.split("=", 1) for item in spec.split(","))
    return replace(prof, operators=tuple(replace(o, name=names.get(o.name, o.name)) for o in prof.operators))


def _other(args: argparse.Namespace) -> int:
    if args.workload == "diffusion":
        from gensched_workloads import diffusion as d
        from gensched_workloads.diffusion_profile import measured

        grid = [(int(b), int(px)) for b, px in (item.split("x") for item in args.grid.split(","))]
        prof = measured(d.CONFIGS[args.config], grid, repeats=args.repeats)
    else:
        from gensched_workloads.moe import MoEDecoder
        from gensched_workloads.moe_profile import measured as moe_measured

        groups = []
        for item in args.experts.split(","):
            name, rng = item.split(":")
            a, _, b = rng.partition("-")
            groups.append((name, int(a), int(b or a)))
        ints = lambda s: [int(v) for v in s.split(",")]  # noqa: E731
        prof = moe_measured(MoEDecoder.seeded(), groups, ints(args.batches), ints(args.contexts), args.repeats)
    prof = _renamed(prof, args.rename)
    prof.save(Path(args.out))
    print(f"wrote {args.out}: operators {', '.join(prof.names())}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", choices=["decoder", "diffusion", "moe"], default="decoder")
    ap.add_argument("--operators", default=None, help="decoder: name:first-last,... covering every layer once")
    ap.add_argument("--config", default="toy", help="diffusion: toy or sd15 shapes")
    ap.add_argument("--grid", default="1x16,2x16,4x16,1x32,2x32", help="diffusion: batch x pixels, ...")
    ap.add_argument("--experts", default="hot:0-1,cold:2-7", help="moe: name:first-last,... groups of experts")
    ap.add_argument("--rename", default=None, help="old=new,... operator names as the job names them")
    ap.add_argument("--model-path", default=None, help="weights saved by DecoderLM.save (default: seeded)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--batches", default="1,2,4,8,16")
    ap.add_argument("--contexts", default="32,128,256")
    ap.add_argument("--prompts", default="16,64,128")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.workload != "decoder":
        return _other(args)
    if not args.operators:
        ap.error("--operators is required for --workload decoder (name:first-last,...)")
    model = DecoderLM.load(args.model_path) if args.model_path else DecoderLM.seeded()
    groups = []
    for item in args.operators.split(","):
        name, rng = item.split(":")
        a, _, b = rng.partition("-")
        groups.append((name, int(a), int(b or a)))
    specs = split(model.cfg.n_layers, groups)
    ints = lambda s: [int(v) for v in s.split(",")]  # noqa: E731
    ops, notes = [], []
    for spec in specs:
        op, r2 = profile_operator(model, spec, ints(args.batches), ints(args.contexts), ints(args.prompts),
                                  args.repeats)
        ops.append(op)
        notes.append(f"{spec.name}: decode fit R^2 {r2:.3f}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    prof = ModelProfile(model=f"DecoderLM-{model.cfg.n_layers}x{model.cfg.d_model}", gpu=device,
                        gpu_memory_gib=80.0, gpu_watts=0.0, idle_watts=0.0, operators=tuple(ops), modelled=False,
                        source=f"measured on {device} with torch {torch.__version__}, 1 thread", notes=notes)
    prof = _renamed(prof, args.rename)
    prof.save(Path(args.out))
    print(f"wrote {args.out}: " + "; ".join(notes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
