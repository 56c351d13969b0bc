"""A stand-in for the parts of a cluster the emulator lacks: Job controller, scheduler, kubelet.

It runs on the emulator's event loop and works on its store directly:
- Job controller: an unsuspended Job gets its pods (from the template, owned by the Job);
- scheduler: a pod with no scheduling gates is bound to the node its required
  node affinity names, and left Pending if that node does not exist, is cordoned
  (``spec.unschedulable``) or has a NoSchedule/NoExecute taint the pod does not tolerate;
- kubelet: bound pods run for ``run_seconds`` then succeed, unless their Job is in ``hold``;
  ``run_seconds`` may be a number, a ``(lo, hi)`` range drawn from a seeded RNG (pods then
  finish in a random but reproducible order) or a callable of the Job (a duration per job);
- Job status follows its pods (active, startTime, Complete condition).
Also plays KubeRay for RayServices (marks them Running after a moment), and creates
"foreign" GPU pods: bound and running, owned by nothing gensched knows, as another team's
workload would be.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime

from tests.harness.emulator import ApiError, Emulator, Kind

RunSeconds = float | tuple[float, float] | Callable[[dict], float]


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def taint(key: str, value: str = "", effect: str = "NoSchedule") -> dict:
    """A node taint; ``effect`` is NoSchedule, PreferNoSchedule or NoExecute."""
    if effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
        raise ValueError(f"taint effect must be NoSchedule, PreferNoSchedule or NoExecute, got {effect!r}")
    return {"key": key, "value": value, "effect": effect} if value else {"key": key, "effect": effect}


def gpu_node(name: str, gpus: int = 8, product: str = "NVIDIA-A100-SXM4-80GB", memory_mib: int = 81920,
             cpu: str = "96", memory: str = "1Ti", mig: str = "", taints: list[dict] | None = None,
             unschedulable: bool = False) -> dict:
    """A Node as the NVIDIA device plugin and GPU Feature Discovery would describe it.

    ``mig``: a profile such as ``3g.40gb`` cuts every GPU into instances (MIG "single" strategy):
    each instance is one ``nvidia.com/gpu`` and the product label names the profile.
    ``taints`` (see :func:`taint`) and ``unschedulable`` (cordoned) go to ``spec``, where a real node has them.
    """
    labels = {"kubernetes.io/hostname": name}
    if mig:
        per_gpu = {1: 7, 2: 3, 3: 2, 4: 1}[int(mig[0])]
        gpus, product = gpus * per_gpu, f"{product}-MIG-{mig}"
        memory_mib = int(mig.split(".")[1].removesuffix("gb")) * 1024
        labels["nvidia.com/mig.strategy"] = "single"
    cap = {"cpu": cpu, "memory": memory, "nvidia.com/gpu": str(gpus), "pods": "110"}
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            **labels, "nvidia.com/gpu.product": product,
            "nvidia.com/gpu.memory": str(memory_mib), "nvidia.com/gpu.count": str(gpus)}},
        "spec": {**({"taints": list(taints)} if taints else {}), **({"unschedulable": True} if unschedulable else {})},
        "status": {"capacity": cap, "allocatable": dict(cap),
                   "conditions": [{"type": "Ready", "status": "True"}]},
    }


def foreign_gpu_pod(name: str, node: str, gpus: int = 1, namespace: str = "default",
                    labels: dict[str, str] | None = None) -> dict:
    """A running pod that is not gensched's (no GenerativeJob, no gensched labels) holding ``gpus`` GPUs of
    ``node`` through ``resources.requests`` and ``limits`` (extended resources need both, equal)."""
    if gpus < 1:
        raise ValueError(f"foreign_gpu_pod: gpus must be >= 1, got {gpus}")
    request = {"nvidia.com/gpu": str(gpus)}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {"app": "foreign"})},
        "spec": {"nodeName": node, "restartPolicy": "Never",
                 "containers": [{"name": "main", "image": "nvcr.io/nvidia/cuda:12.4.0-base-ubuntu22.04",
                                 "resources": {"requests": dict(request), "limits": dict(request)}}]},
        "status": {"phase": "Running", "startTime": _now(),
                   "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}]},
    }


def _tolerates(pod_spec: dict, node_taint: dict) -> bool:
    if node_taint.get("effect") == "PreferNoSchedule":
        return True
    for tol in pod_spec.get("tolerations") or []:
        if tol.get("effect") and tol["effect"] != node_taint.get("effect"):
            continue
        if tol.get("operator") == "Exists" and (not tol.get("key") or tol["key"] == node_taint.get("key")):
            return True
        if tol.get("key") == node_taint.get("key") and tol.get("value", "") == node_taint.get("value", ""):
            return True
    return False


def schedulable_on(pod_spec: dict, node: dict) -> bool:
    """What the kube-scheduler checks here: the node is not cordoned and every hard taint is tolerated."""
    spec = node.get("spec") or {}
    return not spec.get("unschedulable") and all(_tolerates(pod_spec, t) for t in spec.get("taints") or [])


class ClusterStandIn:
    def __init__(self, emulator: Emulator, run_seconds: RunSeconds = 1.0, seed: int | None = None) -> None:
        """``run_seconds``: how long a Job's pod runs (a number; a ``(lo, hi)`` range drawn per pod from
        ``random.Random(seed)``; or ``f(job) -> seconds``). With a ``seed``, Jobs are also visited in a
        seeded random order each tick, so pods due in the same tick finish in random order."""
        if isinstance(run_seconds, tuple) and not (len(run_seconds) == 2 and 0 <= run_seconds[0] <= run_seconds[1]):
            raise ValueError(f"run_seconds range must be (lo, hi) with 0 <= lo <= hi, got {run_seconds!r}")
        self.emu = emulator
        self.run_seconds = run_seconds
        self.rng = random.Random(seed)
        self.shuffle = seed is not None
        self.hold: set[str] = set()  # Job names whose pods keep running
        self.bound: dict[str, str] = {}  # pod key -> node, for assertions
        self.finished: list[str] = []  # pod keys in the order they succeeded
        self._started: dict[str, float] = {}
        self._duration: dict[str, float] = {}
        self._task: asyncio.Task | None = None

    def _draw(self, job: dict) -> float:
        rs = self.run_seconds
        if callable(rs):
            return float(rs(job))
        if isinstance(rs, tuple):
            return self.rng.uniform(*rs)
        return float(rs)

    # -- helpers for tests (run them on the emulator's loop: ``api.call(standin.cordon("gpu-a"))``)
    async def add_foreign_gpu_pod(self, name: str, node: str, gpus: int = 1, namespace: str = "default",
                                  labels: dict[str, str] | None = None) -> dict:
        """Create a bound, running GPU pod that gensched does not own (see :func:`foreign_gpu_pod`)."""
        return await self.emu.create(self.emu.kinds[("", "pods")], namespace,
                                     foreign_gpu_pod(name, node, gpus, namespace, labels))

    async def finish_pod(self, namespace: str, name: str, phase: str = "Succeeded") -> dict:
        """End a pod (a foreign one, or one of a held Job) with ``phase`` Succeeded or Failed."""
        if phase not in ("Succeeded", "Failed"):
            raise ValueError(f"finish_pod: phase must be Succeeded or Failed, got {phase!r}")
        pod = self.emu.get("", "pods", namespace, name)
        if pod is None:
            raise KeyError(f"pod {namespace}/{name} does not exist")
        return await self.emu.replace(self.emu.kinds[("", "pods")], namespace, name,
                                      dict(pod, status={**(pod.get("status") or {}), "phase": phase}), "status")

    async def cordon(self, node: str, unschedulable: bool = True) -> dict:
        """Set (or clear) ``spec.unschedulable``, as ``kubectl cordon``/``uncordon`` do."""
        return await self.emu.patch(self.emu.kinds[("", "nodes")], None, node,
                                    {"spec": {"unschedulable": True if unschedulable else None}},
                                    "application/merge-patch+json")

    async def set_taints(self, node: str, taints: list[dict]) -> dict:
        """Replace the node's taints (see :func:`taint`); an empty list removes them."""
        return await self.emu.patch(self.emu.kinds[("", "nodes")], None, node,
                                    {"spec": {"taints": list(taints) or None}}, "application/merge-patch+json")

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep the stand-in alive; tests see the effects
                print(f"cluster stand-in error: {exc!r}")
            await asyncio.sleep(0.2)

    async def tick(self) -> None:
        emu = self.emu
        jobs_kind, pods_kind = emu.kinds[("batch", "jobs")], emu.kinds[("", "pods")]
        nodes = {n["metadata"]["name"]: n for n in emu.list("", "nodes")}
        owned = self._pods_by_owner()
        jobs = emu.list("batch", "jobs")
        if self.shuffle:
            self.rng.shuffle(jobs)
        for i, job in enumerate(jobs):
            if i and i % 100 == 0:
                await asyncio.sleep(0)  # a long tick must not keep the API from answering
            try:
                await self._job(job, jobs_kind, pods_kind, nodes, owned.get(job["metadata"]["uid"], []))
            except ApiError as exc:  # the Job or a pod changed under us (deleted, edited): next tick sees it
                print(f"cluster stand-in: {job['metadata']['name']}: {exc}")
        await self._ray_services()

    async def _job(self, job: dict, jobs_kind: Kind, pods_kind: Kind, nodes: dict[str, dict],
                   pods: list[dict]) -> None:
        emu = self.emu
        meta, spec = job["metadata"], job["spec"]
        ns = meta["namespace"]
        if meta.get("deletionTimestamp"):
            return
        if spec.get("suspend"):  # like the Job controller: active pods go, the Job says Suspended
            for pod in pods:
                if (pod.get("status") or {}).get("phase") in ("Pending", "Running"):
                    await emu.delete(pods_kind, ns, pod["metadata"]["name"])
            await self._suspended(job, jobs_kind, bool(pods))
            return
        finished = any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
                       for c in (job.get("status") or {}).get("conditions") or [])
        live = [p for p in pods if (p.get("status") or {}).get("phase") in ("Pending", "Running", "Succeeded")]
        if not live and not finished:
            tmpl = spec["template"]
            pod = {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"generateName": meta["name"] + "-", "namespace": ns,
                                "labels": {**(tmpl["metadata"].get("labels") or {}), "job-name": meta["name"]},
                                "annotations": dict(tmpl["metadata"].get("annotations") or {}),
                                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"],
                                                     "uid": meta["uid"], "controller": True}]},
                   "spec": dict(tmpl["spec"]), "status": {"phase": "Pending"}}
            await emu.create(pods_kind, ns, pod)
            return
        for pod in pods:
            await self._advance_pod(pod, nodes, job)
        fresh = [self.emu.get("", "pods", ns, p["metadata"]["name"]) for p in pods]
        await self._job_status(job, jobs_kind, [p for p in fresh if p is not None])

    async def _ray_services(self) -> None:
        emu = self.emu
        for svc in emu.list("ray.io", "rayservices"):
            if (svc.get("status") or {}).get("serviceStatus") != "Running":
                new = dict(svc, status={"serviceStatus": "Running"})
                await emu.replace(emu.kinds[("ray.io", "rayservices")], svc["metadata"]["namespace"],
                                  svc["metadata"]["name"], new, "status")

    def _pods_by_owner(self) -> dict[str, list[dict]]:
        owned: dict[str, list[dict]] = {}
        for pod in self.emu.list("", "pods"):
            for ref in pod["metadata"].get("ownerReferences") or []:
                if ref.get("uid"):
                    owned.setdefault(ref["uid"], []).append(pod)
        return owned

    async def _advance_pod(self, pod: dict, nodes: dict[str, dict], job: dict) -> None:
        emu, kind = self.emu, self.emu.kinds[("", "pods")]
        meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
        key = f"{meta['namespace']}/{meta['name']}"
        job_name = job["metadata"]["name"]
        if spec.get("schedulingGates"):
            return
        if not spec.get("nodeName"):
            target = _affinity_node(spec)
            if target is None or target not in nodes or not schedulable_on(spec, nodes[target]):
                return
            spec = dict(spec, nodeName=target)
            self.bound[key] = target
            self._started[key] = time.monotonic()
            self._duration[key] = self._draw(job)
            await emu.replace(kind, meta["namespace"], meta["name"], dict(pod, spec=spec), None)
            pod = emu.get("", "pods", meta["namespace"], meta["name"]) or pod
            await emu.replace(kind, meta["namespace"], meta["name"],
                              dict(pod, status={"phase": "Running", "startTime": _now()}), "status")
            return
        ran = time.monotonic() - self._started.get(key, 0)
        due = self._duration.get(key)
        if due is None:  # bound before this stand-in started (or by someone else): draw now
            due = self._duration[key] = self._draw(job)
        if status.get("phase") == "Running" and job_name not in self.hold and ran >= due:
            await emu.replace(kind, meta["namespace"], meta["name"],
                              dict(pod, status={**status, "phase": "Succeeded"}), "status")
            self.finished.append(key)

    async def _suspended(self, job: dict, kind, had_pods: bool) -> None:
        status = dict(job.get("status") or {})
        conds = [c for c in status.get("conditions") or [] if c.get("type") != "Suspended"]
        new = dict(status, active=0, conditions=[*conds, {"type": "Suspended", "status": "True",
                                                          "lastTransitionTime": _now()}])
        if new != status and (had_pods or status.get("startTime")):
            await self.emu.replace(kind, job["metadata"]["namespace"], job["metadata"]["name"],
                                   dict(job, status=new), "status")

    async def _job_status(self, job: dict, kind, pods: list[dict]) -> None:
        meta = job["metadata"]
        phases = [(p.get("status") or {}).get("phase") for p in pods]
        status = dict(job.get("status") or {})
        new = dict(status)
        new["active"] = sum(1 for ph in phases if ph in ("Pending", "Running"))
        if any(ph == "Running" for ph in phases) and "startTime" not in new:
            new["startTime"] = _now()
        new["conditions"] = [c for c in new.get("conditions") or [] if c.get("type") != "Suspended"]
        if not new["conditions"]:
            new.pop("conditions")
        done = any(c.get("type") in ("Complete", "Failed") for c in new.get("conditions") or [])
        if phases and all(ph == "Succeeded" for ph in phases) and not done:
            new["succeeded"] = len(phases)
            new["active"] = 0
            new.setdefault("completionTime", _now())
            new["conditions"] = [{"type": "Complete", "status": "True", "lastTransitionTime": _now()}]
        if new != status:
            await self.emu.replace(kind, meta["namespace"], meta["name"], dict(job, status=new), "status")


def _affinity_node(spec: dict) -> str | None:
    if (spec.get("nodeSelector") or {}).get("kubernetes.io/hostname"):
        return spec["nodeSelector"]["kubernetes.io/hostname"]
    terms = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
             .get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms") or []
    for term in terms:
        for expr in term.get("matchExpressions") or []:
            if expr.get("key") == "kubernetes.io/hostname" and expr.get("operator") == "In" and expr.get("values"):
                return expr["values"][0]
    return None
