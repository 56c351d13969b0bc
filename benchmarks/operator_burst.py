"""A burst of GenerativeJobs through the real operator against the API emulator (issue 9, point 6).

Run: python benchmarks/operator_burst.py [--jobs 5000] [--nodes 200] [--gpus 8] [--run-seconds 0] [--json OUT]

What it does:
- the project's API emulator (``tests/harness/server.py``) on 127.0.0.1, the CRDs from ``crds/``, ``--nodes``
  GPU nodes of ``--gpus`` A100s, ``--namespaces`` team namespaces;
- the cluster stand-in (``tests/harness/cluster.py``; ``BurstStandIn`` below reads the store without
  copying it, same behaviour) plays Job controller, scheduler and kubelet. With
  ``--run-seconds 0`` (default) every Job's pods are held running (the stand-in's ``hold``): the burst fills
  the cluster and the rest waits; with ``--run-seconds N`` pods succeed N seconds after they are bound, so GPUs
  free up and the queue drains while the burst is decided;
- the operator exactly as deployed: ``python -m gensched run --standalone`` as a subprocess (as
  ``tests/conftest.py``'s OperatorProcess), leader election on, default settings, no SchedulingPolicy
  (built-in defaults: Gensched packing, EASY backfill);
- the jobs are written straight into the emulator's store (``Emulator.create``: schema validation,
  defaulting and watch events as for an HTTP create, without the HTTP round trip), in chunks of 250, as
  fast as the store takes them. Shapes: 0.25 and 0.5 of a GPU, 1, 2, 4 and 8 GPUs (10/15/35/18/12/10 % of the
  jobs), three models; half carry a ``batch.estimatedDuration`` (backfill), 30 % are interruptible; seeded.

Measured:
- decision latency per job: from its creation to the first time its status is seen decided (placed:
  ``status.placement`` set; or ``Pending`` with ``status.queue.reason``); the status is polled every 0.2 s, so
  latencies are up to 0.2 s pessimistic; p50, p99, max, and the time until every job is decided;
- the operator's peak RSS: ``VmHWM`` of ``/proc/<pid>/status``, sampled every 0.5 s;
- GPUs double-allocated: ``tests/harness/invariants.violations`` on the Job listing every 0.5 s (also an
  unsuspended Job without a placement);
- API requests the operator sent while the burst was decided (the emulator counts every request it serves;
  the benchmark itself reads the store directly and sends none), per decision, by verb and resource.
- CPU seconds used until every job was decided, by the operator (``/proc/<pid>/stat``) and by this process
  (emulator, stand-in, sampler), and the stand-in's tick times: the share of the machine that was harness.
The benchmark process hosts the emulator and the stand-in, so on a small machine they compete with the
operator for CPU: the times are an upper bound on the operator's own. ``--py-spy FILE`` profiles the operator.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness.cluster import ClusterStandIn, gpu_node  # noqa: E402
from tests.harness.emulator import ApiError  # noqa: E402
from tests.harness.invariants import violations  # noqa: E402
from tests.harness.ports import free_port  # noqa: E402
from tests.harness.server import EmulatorServer  # noqa: E402

SHAPES = ((0.25, 0.10), (0.5, 0.15), (1, 0.35), (2, 0.18), (4, 0.12), (8, 0.10))  # (GPUs, share of the jobs)
MODELS = (("llama-2-7b", 7, "int4"), ("llama-2-13b", 13, "int8"), ("mistral-7b", 7, "fp16"))
CHUNK = 250
POLL_S, SAMPLE_S = 0.2, 0.5


class BurstStandIn(ClusterStandIn):
    """The cluster stand-in, reading the emulator's stored objects instead of deep copies of them.

    ``ClusterStandIn.tick`` deep-copies every Job and Pod every 0.2 s. At 5,000 Jobs that costs more CPU than
    the operator does, on the emulator's event loop, so it would slow the API down and the benchmark would
    measure the harness. The emulator replaces stored objects and never changes them in place, and the
    stand-in only reads what it is given, so the copies are not needed. What the stand-in decides and writes
    is unchanged: this class only overrides how it reads.
    """

    def _pods_by_owner(self) -> dict[str, list[dict]]:
        owned: dict[str, list[dict]] = {}
        for pod in self.emu.objects_of(self.emu.kinds[("", "pods")]):
            for ref in pod["metadata"].get("ownerReferences") or []:
                if ref.get("uid"):
                    owned.setdefault(ref["uid"], []).append(pod)
        return owned

    async def tick(self) -> None:
        emu = self.emu
        jobs_kind, pods_kind = emu.kinds[("batch", "jobs")], emu.kinds[("", "pods")]
        nodes = {n["metadata"]["name"]: n for n in emu.objects_of(emu.kinds[("", "nodes")])}
        owned = self._pods_by_owner()
        for i, job in enumerate(emu.objects_of(jobs_kind)):
            if i and i % 100 == 0:
                await asyncio.sleep(0)  # as ClusterStandIn.tick: a long tick must not keep the API from answering
            try:
                await self._job(job, jobs_kind, pods_kind, nodes, owned.get(job["metadata"]["uid"], []))
            except ApiError as exc:  # changed under us: the next tick sees it
                print(f"cluster stand-in: {job['metadata']['name']}: {exc}")
        await self._ray_services()


def timed_ticks(standin: ClusterStandIn) -> list[float]:
    """Record how long each stand-in tick takes (it runs on the emulator's loop: its time is the harness's)."""
    ticks: list[float] = []
    inner = standin.tick

    async def tick() -> None:
        t = time.perf_counter()
        try:
            await inner()
        finally:
            ticks.append(time.perf_counter() - t)

    standin.tick = tick  # type: ignore[method-assign]
    return ticks


def job_doc(name: str, ns: str, rng: random.Random) -> dict:
    gpus = rng.choices([s for s, _ in SHAPES], [w for _, w in SHAPES])[0]
    model, params, precision = rng.choice(MODELS)
    batch: dict = {"input": f"s3://{ns}/in/{name}", "output": f"s3://{ns}/out/{name}"}
    if rng.random() < 0.5:
        batch["estimatedDuration"] = rng.choice(["10m", "30m", "1h", "4h"])
    if rng.random() < 0.3:
        batch["interruptible"] = True
    return {"apiVersion": "gensched.io/v1alpha1", "kind": "GenerativeJob",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"mode": "Batch", "model": {"name": model, "parametersBillions": params, "precision": precision,
                                                "image": "registry.example/gen:1"},
                     "resources": {"gpus": gpus, "cpu": "2", "memory": "8Gi"}, "batch": batch}}


def decided(gj: dict) -> bool:
    st = gj.get("status") or {}
    if st.get("placement") or st.get("phase") in ("Placed", "Running", "Succeeded"):
        return True
    return st.get("phase") == "Pending" and bool((st.get("queue") or {}).get("reason"))


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def proc_status(pid: int) -> dict[str, int]:
    """VmHWM and VmRSS in kB (empty once the process is gone)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmHWM:", "VmRSS:")):
                out[line.split(":")[0]] = int(line.split()[1])
    except OSError:
        pass
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Sampler(threading.Thread):
    """Every 0.2 s: which jobs are decided; every 0.5 s: the invariants on the Job listing and the RSS."""

    def __init__(self, api: EmulatorServer, pid: int, created: dict[str, float]) -> None:
        super().__init__(daemon=True)
        self.api, self.pid, self.created = api, pid, created
        self.decided_at: dict[str, float] = {}
        self.seen: list[str] = []
        self.checks = 0
        self.hwm_kb = 0
        self.rss_kb: list[int] = []
        self.stop_flag = threading.Event()

    def _read(self, want_jobs: bool) -> tuple[list[dict], list[dict]]:
        emu = self.api.emulator
        assert emu is not None

        async def snap() -> tuple[list[dict], list[dict]]:  # on the emulator's loop: a consistent listing
            gjs = emu.objects_of(emu.kinds[("gensched.io", "generativejobs")])
            return gjs, emu.objects_of(emu.kinds[("batch", "jobs")]) if want_jobs else []

        return self.api.call(snap())

    def run(self) -> None:
        last_sample = 0.0
        while not self.stop_flag.is_set():
            t = time.monotonic()
            sample = t - last_sample >= SAMPLE_S
            gjs, jobs = self._read(sample)
            for gj in gjs:
                key = f"{gj['metadata']['namespace']}/{gj['metadata']['name']}"
                if key not in self.decided_at and key in self.created and decided(gj):
                    self.decided_at[key] = t
            if sample:
                last_sample = t
                self.seen.extend(violations(jobs))
                self.checks += 1
                st = proc_status(self.pid)
                self.hwm_kb = max(self.hwm_kb, st.get("VmHWM", 0))
                if "VmRSS" in st:
                    self.rss_kb.append(st["VmRSS"])
            self.stop_flag.wait(max(0.0, POLL_S - (time.monotonic() - t)))


def start_operator(kubeconfig: Path, log: Path, env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    port, metrics_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "gensched", "run", "--standalone", "--metrics-port", str(metrics_port),
           "--liveness", f"http://127.0.0.1:{port}/healthz"]
    full_env = dict(os.environ, KUBECONFIG=str(kubeconfig), PYTHONUNBUFFERED="1", GENSCHED_NAMESPACE="default",
                    **env)
    proc = subprocess.Popen(cmd, env=full_env, stdout=log.open("a"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"operator exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return proc, metrics_port
        except OSError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit("operator did not become live within 90 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--gpus", type=int, default=8, help="GPUs per node")
    parser.add_argument("--namespaces", type=int, default=10)
    parser.add_argument("--run-seconds", type=float, default=0.0,
                        help="pods succeed this long after binding (0: held running for the whole run)")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up when not every job is decided by then")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds observed after the last decision")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--keep", help="keep the operator log in this directory")
    parser.add_argument("--py-spy", dest="pyspy",
                        help="profile the operator with py-spy (collapsed stacks to this file)")
    args = parser.parse_args()
    if args.jobs < 1 or args.nodes < 1 or args.gpus < 1 or args.namespaces < 1:
        parser.error("--jobs, --nodes, --gpus and --namespaces must be at least 1")

    rng = random.Random(args.seed)
    tmp = Path(args.keep or tempfile.mkdtemp(prefix="gensched-burst-"))
    tmp.mkdir(parents=True, exist_ok=True)
    api = EmulatorServer().start()
    emu = api.emulator
    assert emu is not None
    if not hasattr(emu, "requests_served"):
        raise SystemExit("tests/harness/emulator.py has no request counter (Emulator.requests_served)")
    kubeconfig = api.write_kubeconfig(tmp / "kubeconfig")

    def served() -> Counter:
        async def copy() -> Counter:  # on the emulator's loop, which updates the counts
            return Counter(emu.requests_served)

        return api.call(copy())

    async def setup() -> None:
        crd_kind = emu.kinds[("apiextensions.k8s.io", "customresourcedefinitions")]
        for f in sorted((ROOT / "crds").glob("*.yaml")):
            for doc in yaml.safe_load_all(f.read_text()):
                if doc:
                    await emu.create(crd_kind, None, doc)
        for i in range(args.namespaces):
            await emu.create(emu.kinds[("", "namespaces")], None,
                             {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"team-{i:02d}"}})
        for i in range(args.nodes):
            await emu.create(emu.kinds[("", "nodes")], None, gpu_node(f"gpu-{i:03d}", gpus=args.gpus))

    api.call(setup())
    hold = args.run_seconds <= 0
    standin = BurstStandIn(emu, run_seconds=args.run_seconds if not hold else 1.0)
    ticks = timed_ticks(standin)
    api.call(standin.start())
    log = tmp / "operator.log"
    proc, _ = start_operator(kubeconfig, log, {})
    print(f"operator pid {proc.pid} live; log {log}", flush=True)
    spy = None
    if args.pyspy:
        spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(proc.pid),
                                "--format", "raw", "--rate", "50",
                                "--threads", "--nonblocking", "-o", args.pyspy], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not (emu.get("coordination.k8s.io", "leases", "default", "gensched-leader") or {}).get("spec", {}).get(
            "holderIdentity"):
        if time.monotonic() > deadline:
            raise SystemExit("no leader within 30 s")
        time.sleep(0.2)

    docs = [job_doc(f"burst-{i:05d}", f"team-{i % args.namespaces:02d}", rng) for i in range(args.jobs)]
    if hold:
        from gensched.controller.objects import job_name

        standin.hold.update(job_name(d["metadata"]["name"]) for d in docs)
    created: dict[str, float] = {}
    sampler = Sampler(api, proc.pid, created)
    before = served()
    sampler.start()

    async def create(chunk: list[dict]) -> list[tuple[str, float]]:
        kind, out = emu.kinds[("gensched.io", "generativejobs")], []
        for d in chunk:
            await emu.create(kind, d["metadata"]["namespace"], d)
            out.append((f"{d['metadata']['namespace']}/{d['metadata']['name']}", time.monotonic()))
        return out

    t0 = time.monotonic()
    cpu0, own0 = cpu_seconds(proc.pid), time.process_time()
    for i in range(0, len(docs), CHUNK):
        created.update(api.call(create(docs[i:i + CHUNK]), timeout=120))
    t_created = time.monotonic()
    print(f"{len(docs)} GenerativeJobs created in {t_created - t0:.1f} s", flush=True)
    next_report = t0
    while len(sampler.decided_at) < len(docs) and time.monotonic() - t0 < args.timeout:
        if proc.poll() is not None:
            print(f"operator exited with {proc.returncode}", flush=True)
            break
        if time.monotonic() >= next_report:
            next_report += 5
            print(f"  t={time.monotonic() - t0:6.1f} s decided {len(sampler.decided_at)}/{len(docs)} "
                  f"RSS {sampler.rss_kb[-1] / 1024 if sampler.rss_kb else 0:.0f} MB", flush=True)
        time.sleep(0.5)
    at_decided = served()
    cpu_op, cpu_harness = cpu_seconds(proc.pid) - cpu0, time.process_time() - own0
    time.sleep(args.settle)
    sampler.stop_flag.set()
    sampler.join(10)
    at_end = served()
    final = [gj for gj in emu.objects_of(emu.kinds[("gensched.io", "generativejobs")])]
    if spy is not None:
        spy.send_signal(2)
        spy.wait(30)
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
    api.call(standin.stop())
    api.stop()

    lat = [sampler.decided_at[k] - created[k] for k in sampler.decided_at]
    burst = at_decided - before
    n_dec = len(sampler.decided_at)
    placed = sum(1 for gj in final if (gj.get("status") or {}).get("placement")
                 or (gj.get("status") or {}).get("phase") in ("Placed", "Running", "Succeeded"))
    reasons = Counter(((gj.get("status") or {}).get("queue") or {}).get("reason") for gj in final
                      if (gj.get("status") or {}).get("phase") == "Pending")
    result = {
        "jobs": len(docs), "nodes": args.nodes, "gpus_per_node": args.gpus, "namespaces": args.namespaces,
        "run_seconds": None if hold else args.run_seconds, "seed": args.seed,
        "create_s": round(t_created - t0, 2), "decided": n_dec,
        "all_decided_s": round(max(sampler.decided_at.values()) - t0, 2) if n_dec == len(docs) else None,
        "latency_p50_s": round(pct(lat, 0.5), 2), "latency_p99_s": round(pct(lat, 0.99), 2),
        "latency_max_s": round(max(lat), 2) if lat else None,
        "placed_at_end": placed, "pending_reasons_at_end": {str(k): v for k, v in reasons.items()},
        "operator_peak_rss_mb": round(sampler.hwm_kb / 1024, 1),
        "operator_cpu_s_until_decided": round(cpu_op, 1), "harness_cpu_s_until_decided": round(cpu_harness, 1),
        "load_average_at_end": round(os.getloadavg()[0], 1),
        "invariant_checks": sampler.checks, "violations": len(sampler.seen), "violation_examples": sampler.seen[:5],
        "requests_until_decided": sum(burst.values()),
        "requests_per_decision": round(sum(burst.values()) / max(1, n_dec), 2),
        "requests_by_kind_until_decided": {f"{v} {r}": c for (v, r), c in burst.most_common()},
        "requests_incl_settle": sum((at_end - before).values()),
        "standin_ticks": len(ticks), "standin_tick_p50_s": round(pct(ticks, 0.5), 3),
        "standin_tick_max_s": round(max(ticks), 3) if ticks else None,
        "traceback_in_log": "Traceback" in log.read_text(),
    }
    print(json.dumps(result, indent=1))
    ok = (n_dec == len(docs) and result["all_decided_s"] is not None and result["all_decided_s"] <= 60
          and result["operator_peak_rss_mb"] <= 300 and not sampler.seen)
    print(f"targets (all decided <= 60 s, peak RSS <= 300 MB, 0 double allocations): {'met' if ok else 'NOT met'}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
