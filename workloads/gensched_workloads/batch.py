"""Batch synthesis: the container command of Batch GenerativeJobs.

Reads prompts (JSONL with ``prompt`` and optional ``id``, or plain lines), generates, appends one
JSON line per result, and checkpoints after every item (atomic rename) so that a job suspended by
gensched between low-carbon slots (SIGTERM) or killed resumes exactly where it stopped, with no
duplicate and no lost line. Exits 0 only when everything is done; an interrupted run exits 143 so
Kubernetes does not count it as a success.

Useful output for gensched's accounting: with ``--metrics-port`` (default ``$GENSCHED_METRICS_PORT``, set by
the operator on the Jobs it creates) the counter ``gensched_workload_outputs_total`` (items done, the
checkpoint included, so a resumed run continues the count) is served for Prometheus to scrape.

    python -m gensched_workloads.batch --input prompts.jsonl --output out.jsonl [--model-path DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from gensched_workloads.model import DecoderLM, decode, encode, generate

INTERRUPTED = 143


def read_prompts(path: Path) -> list[tuple[str, str]]:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            item = json.loads(line)
            out.append((str(item.get("id", n)), str(item["prompt"])))
        else:
            out.append((str(n), line))
    return out


def load_checkpoint(path: Path) -> tuple[int, int]:
    """(items done, bytes of output they occupy)."""
    if not path.exists():
        return 0, 0
    data = json.loads(path.read_text())
    return int(data["done"]), int(data["bytes"])


def save_checkpoint(path: Path, done: int, size: int) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({"done": done, "bytes": size}))
    os.replace(tmp, path)


def outputs_counter(port: int, done: int):
    """The items-done counter on ``port`` (0: off), starting at the checkpoint's count; None when off."""
    if not port:
        return None
    from prometheus_client import CollectorRegistry, Counter, start_http_server

    registry = CollectorRegistry()
    counter = Counter("gensched_workload_outputs", "Items synthesised by this job so far (checkpoint included)",
                      registry=registry)
    counter.inc(done)
    start_http_server(port, registry=registry)
    return counter


def run(args: argparse.Namespace) -> int:
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    prompts = read_prompts(Path(args.input))
    out = Path(args.output)
    ckpt = Path(args.checkpoint or f"{args.output}.ckpt")
    done, size = load_checkpoint(ckpt)
    outputs = outputs_counter(args.metrics_port, done)
    model = DecoderLM.load(args.model_path) if args.model_path else DecoderLM.seeded(seed=args.seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("ab") as fh:
        fh.truncate(size)  # drop a line half-written before the last checkpoint
        fh.seek(size)
        for i in range(done, len(prompts)):
            if stop["now"] or (args.stop_after is not None and i - done >= args.stop_after):
                print(f"interrupted after {i}/{len(prompts)} items; resume with the same command", file=sys.stderr)
                return INTERRUPTED
            key, prompt = prompts[i]
            tokens = generate(model, encode(prompt), args.max_tokens)
            fh.write((json.dumps({"id": key, "prompt": prompt, "completion": decode(tokens),
                                  "tokens": tokens}) + "\n").encode())
            fh.flush()
            os.fsync(fh.fileno())
            save_checkpoint(ckpt, i + 1, fh.tell())
            if outputs is not None:
                outputs.inc()
    print(f"done: {len(prompts)} items in {out}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--checkpoint", default=None, help="default: OUTPUT.ckpt")
    ap.add_argument("--model-path", default=None, help="weights saved by DecoderLM.save (default: seeded)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--stop-after", type=int, default=None, help="process at most N items this run (testing)")
    ap.add_argument("--metrics-port", type=int, default=int(os.environ.get("GENSCHED_METRICS_PORT") or 0),
                    help="serve gensched_workload_outputs_total here for gensched's accounting (0: off)")
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
