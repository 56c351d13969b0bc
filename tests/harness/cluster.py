"""A stand-in for the parts of a cluster the emulator lacks: Job controller, scheduler, kubelet.

It runs on the emulator's event loop and works on its store directly:
- Job controller: an unsuspended Job gets its pods (from the template, owned by the Job);
- scheduler: a pod with no scheduling gates is bound to the node its required
  node affinity names, and refused (left Pending) if that node does not exist;
- kubelet: bound pods run for ``run_seconds`` then succeed, unless their Job is in ``hold``;
- Job status follows its pods (active, startTime, Complete condition).
Also plays KubeRay for RayServices: marks them Running after a moment.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from tests.harness.emulator import Emulator


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def gpu_node(name: str, gpus: int = 8, product: str = "NVIDIA-A100-SXM4-80GB", memory_mib: int = 81920,
             cpu: str = "96", memory: str = "1Ti", mig: str = "") -> dict:
    """A Node as the NVIDIA device plugin and GPU Feature Discovery would describe it.

    ``mig``: a profile such as ``3g.40gb`` cuts every GPU into instances (MIG "single" strategy):
    each instance is one ``nvidia.com/gpu`` and the product label names the profile.
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
        "spec": {},
        "status": {"capacity": cap, "allocatable": dict(cap),
                   "conditions": [{"type": "Ready", "status": "True"}]},
    }


class ClusterStandIn:
    def __init__(self, emulator: Emulator, run_seconds: float = 1.0) -> None:
        self.emu = emulator
        self.run_seconds = run_seconds
        self.hold: set[str] = set()  # Job names whose pods keep running
        self.bound: dict[str, str] = {}  # pod key -> node, for assertions
        self._started: dict[str, float] = {}
        self._task: asyncio.Task | None = None

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
        nodes = {n["metadata"]["name"] for n in emu.list("", "nodes")}
        for job in emu.list("batch", "jobs"):
            meta, spec = job["metadata"], job["spec"]
            ns = meta["namespace"]
            pods = [p for p in emu.list("", "pods", ns)
                    if any(r.get("uid") == meta["uid"] for r in p["metadata"].get("ownerReferences") or [])]
            if meta.get("deletionTimestamp"):
                continue
            if spec.get("suspend"):  # like the Job controller: active pods go, the Job says Suspended
                for pod in pods:
                    if (pod.get("status") or {}).get("phase") in ("Pending", "Running"):
                        await emu.delete(pods_kind, ns, pod["metadata"]["name"])
                await self._suspended(job, jobs_kind, bool(pods))
                continue
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
                continue
            for pod in pods:
                await self._advance_pod(pod, nodes, meta["name"])
            await self._job_status(job, jobs_kind)
        for svc in emu.list("ray.io", "rayservices"):
            if (svc.get("status") or {}).get("serviceStatus") != "Running":
                new = dict(svc, status={"serviceStatus": "Running"})
                await emu.replace(emu.kinds[("ray.io", "rayservices")], svc["metadata"]["namespace"],
                                  svc["metadata"]["name"], new, "status")

    async def _advance_pod(self, pod: dict, nodes: set[str], job_name: str) -> None:
        emu, kind = self.emu, self.emu.kinds[("", "pods")]
        meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
        key = f"{meta['namespace']}/{meta['name']}"
        if spec.get("schedulingGates"):
            return
        if not spec.get("nodeName"):
            target = _affinity_node(spec)
            if target is None or target not in nodes:
                return
            spec = dict(spec, nodeName=target)
            self.bound[key] = target
            self._started[key] = time.monotonic()
            await emu.replace(kind, meta["namespace"], meta["name"], dict(pod, spec=spec), None)
            pod = emu.get("", "pods", meta["namespace"], meta["name"]) or pod
            await emu.replace(kind, meta["namespace"], meta["name"],
                              dict(pod, status={"phase": "Running", "startTime": _now()}), "status")
            return
        ran = time.monotonic() - self._started.get(key, 0)
        if status.get("phase") == "Running" and job_name not in self.hold and ran >= self.run_seconds:
            await emu.replace(kind, meta["namespace"], meta["name"],
                              dict(pod, status={**status, "phase": "Succeeded"}), "status")

    async def _suspended(self, job: dict, kind, had_pods: bool) -> None:
        status = dict(job.get("status") or {})
        conds = [c for c in status.get("conditions") or [] if c.get("type") != "Suspended"]
        new = dict(status, active=0, conditions=[*conds, {"type": "Suspended", "status": "True",
                                                          "lastTransitionTime": _now()}])
        if new != status and (had_pods or status.get("startTime")):
            await self.emu.replace(kind, job["metadata"]["namespace"], job["metadata"]["name"],
                                   dict(job, status=new), "status")

    async def _job_status(self, job: dict, kind) -> None:
        meta = job["metadata"]
        pods = [p for p in self.emu.list("", "pods", meta["namespace"])
                if any(r.get("uid") == meta["uid"] for r in p["metadata"].get("ownerReferences") or [])]
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
