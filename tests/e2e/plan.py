"""The kind e2e run as data: every command and manifest, in order, in one place.

``tests/e2e/test_kind_lifecycle.py`` runs these steps on a real kind cluster (Docker needed);
``tests/integration/test_e2e_plan.py`` checks the same data where there is no Docker: the chart rendered
with exactly :data:`HELM_SETS`, every manifest through ``kubectl apply --dry-run`` against the API emulator,
the job through the operator's own validation, the fake-GPU script on emulated kind nodes, and the
:data:`LEADER` and :data:`LIFECYCLE` steps themselves against the real operator on the emulator.

A step is a command (``argv``, ``stdin``) and what its output must show: ``until`` (a regex the stdout
must match; the command is retried every 2 s until it does or ``timeout_s`` passes), ``forbid`` (a regex
it must not match) and ``same_as`` (the stdout of an earlier step). ``kubectl``/``helm`` resolve to
``.tools/bin`` first (``make tools``), so the e2e run uses the same binaries as the other tests.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.harness.tools import ROOT, tool

KIND_CONFIG = ROOT / "kind-config.yaml"
CLUSTER = yaml.safe_load(KIND_CONFIG.read_text())["name"]  # kind names nodes <cluster>-worker, -worker2, ...
DOCKERFILE = "operator/Dockerfile"
IMAGE_REPOSITORY, IMAGE_TAG = "gensched", "e2e"
IMAGE = f"{IMAGE_REPOSITORY}:{IMAGE_TAG}"  # built locally and loaded into kind: never pulled (pullPolicy Never)
RELEASE = NAMESPACE = "gensched"
CHART = "charts/gensched"
DEPLOYMENT = f"{RELEASE}-gensched"  # the chart's gensched.fullname for this release
LEASE = "gensched-leader"  # the operator's coordination.k8s.io Lease, in its own namespace
# Chart values (charts/gensched/values.yaml: image.repository, image.tag, image.pullPolicy).
HELM_VALUES: dict[str, str] = {"image.repository": IMAGE_REPOSITORY, "image.tag": IMAGE_TAG,
                               "image.pullPolicy": "Never"}
HELM_SETS: tuple[str, ...] = tuple(f"{k}={v}" for k, v in HELM_VALUES.items())

JOB_NAMESPACE = "gensched-e2e"
JOB = "e2e-batch"
# The workload container runs the operator image, already loaded into kind (it has sh and sleep), so no node
# pulls anything. A pulled multi-platform image such as busybox cannot be relied on: `kind load docker-image`
# fails on it with Docker's containerd image store ("content digest ... not found", kubernetes-sigs/kind#3795).
WORKLOAD_IMAGE = IMAGE
JOB_SELECTOR = f"gensched.io/job={JOB}"  # the label the operator puts on the Job's pod template
OPERATOR_SELECTOR = f"app.kubernetes.io/instance={RELEASE}"


def kind_workers() -> dict[str, dict[str, str]]:
    """Worker node names kind gives the nodes of kind-config.yaml, with the labels the config sets."""
    workers = [n for n in yaml.safe_load(KIND_CONFIG.read_text())["nodes"] if n["role"] == "worker"]
    return {f"{CLUSTER}-worker{i + 1 if i else ''}": dict(n.get("labels") or {}) for i, n in enumerate(workers)}


# What scripts/kind-fake-gpus.sh advertises per gensched.io/gpu-sim value: (GFD product, MiB per GPU, GPUs).
FAKE_GPUS: dict[str, tuple[str, int, int]] = {"a100": ("NVIDIA-A100-SXM4-80GB", 81920, 8),
                                              "l4": ("NVIDIA-L4", 23034, 4)}

NAMESPACE_MANIFEST: dict = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": JOB_NAMESPACE}}

# The batch job: a shell prints what the operator passed it and exits 0 after a few seconds.
GENERATIVE_JOB: dict = {
    "apiVersion": "gensched.io/v1alpha1",
    "kind": "GenerativeJob",
    "metadata": {"name": JOB, "namespace": JOB_NAMESPACE},
    "spec": {
        "mode": "Batch",
        "model": {
            "name": "e2e-tiny",
            "parametersBillions": 0.1,
            "precision": "int8",
            "image": WORKLOAD_IMAGE,
            "command": ["sh", "-c"],
            "args": ['echo "generating $GENSCHED_ITEMS items with $GENSCHED_MODEL"; sleep 5; echo e2e-done'],
        },
        "resources": {"gpus": 1, "cpu": "100m", "memory": "64Mi"},
        "batch": {"input": "e2e://prompts", "items": 3, "estimatedDuration": "1m", "deadline": "1h"},
    },
}


@dataclass(frozen=True)
class Step:
    name: str
    argv: tuple[str, ...]
    stdin: str | None = None
    timeout_s: float = 120
    until: str | None = None  # regex the stdout must match (retried until it does)
    forbid: str | None = None  # regex the stdout must not match
    same_as: str | None = None  # name of an earlier step whose stdout this one's must equal
    real_cluster_only: bool = False  # needs what the emulator has not: kubelet logs, a Deployment controller


def _manifest(*docs: dict) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)


def _kj(*args: str, path: str) -> tuple[str, ...]:
    return ("kubectl", *args, "-o", f"jsonpath={path}")


CLUSTER_UP: tuple[Step, ...] = (
    Step("no cluster left from an earlier run", ("kind", "delete", "cluster", "--name", CLUSTER), timeout_s=180),
    Step("create the kind cluster", ("kind", "create", "cluster", "--config", str(KIND_CONFIG.relative_to(ROOT)),
                                     "--wait", "180s"), timeout_s=420),
    Step("advertise fake GPUs", ("bash", "scripts/kind-fake-gpus.sh"), timeout_s=120),
    Step("build the operator image", ("docker", "build", "-f", DOCKERFILE, "-t", IMAGE, "."), timeout_s=1200),
    Step("load the operator image", ("kind", "load", "docker-image", IMAGE, "--name", CLUSTER), timeout_s=300),
)

INSTALL: tuple[Step, ...] = (
    Step("install the chart", ("helm", "install", RELEASE, CHART, "-n", NAMESPACE, "--create-namespace",
                               *(a for s in HELM_SETS for a in ("--set", s))), timeout_s=180),
    Step("wait for the operator rollout", ("kubectl", "rollout", "status", f"deployment/{DEPLOYMENT}", "-n", NAMESPACE,
                                           "--timeout=240s"), timeout_s=260, real_cluster_only=True),
)

LEADER: tuple[Step, ...] = (
    Step("a replica holds the Lease", _kj("get", "lease", LEASE, "-n", NAMESPACE, path="{.spec.holderIdentity}"),
         timeout_s=90, until=r"\S"),
)

_WORKER = "|".join(re.escape(w) for w in kind_workers())
_PRODUCT = "|".join(re.escape(p) for p, _, _ in FAKE_GPUS.values())

LIFECYCLE: tuple[Step, ...] = (
    Step("create the job namespace", ("kubectl", "apply", "-f", "-"), stdin=_manifest(NAMESPACE_MANIFEST)),
    Step("apply the batch GenerativeJob", ("kubectl", "apply", "-f", "-"), stdin=_manifest(GENERATIVE_JOB)),
    Step("the job succeeds", ("kubectl", "wait", "--for=jsonpath={.status.phase}=Succeeded", f"gj/{JOB}",
                              "-n", JOB_NAMESPACE, "--timeout=300s"), timeout_s=320),
    Step("placement node", _kj("get", "gj", JOB, "-n", JOB_NAMESPACE, path="{.status.placement.node}"),
         until=rf"^({_WORKER})$", timeout_s=10),
    Step("placement GPUs", _kj("get", "gj", JOB, "-n", JOB_NAMESPACE, path="{.status.placement.gpuModel} "
                               "{.status.placement.gpuMilli} {.status.placement.gpuIndices}"),
         until=rf"^({_PRODUCT}) 1000 \[\d\]$", timeout_s=10),
    Step("the Job was released and completed", _kj("get", "job", JOB, "-n", JOB_NAMESPACE,
                                                    path="{.spec.suspend} {.status.succeeded}"),
         until=r"^false 1$", timeout_s=30),
    Step("its pod ran on the placed node", _kj("get", "pods", "-n", JOB_NAMESPACE, "-l", JOB_SELECTOR,
                                               path="{.items[*].spec.nodeName}"),
         same_as="placement node", timeout_s=10),
    Step("Placed and Succeeded Events", _kj("get", "events", "-n", JOB_NAMESPACE, "--field-selector",
                                            f"involvedObject.name={JOB}",
                                            path='{range .items[*]}{.reason}{"\\n"}{end}'),
         until=r"(?ms)(?=.*^Placed$)(?=.*^Succeeded$)", timeout_s=60),
    Step("the workload ran", ("kubectl", "logs", "-n", JOB_NAMESPACE, "-l", JOB_SELECTOR, "--tail=-1"),
         until=r"generating 3 items with e2e-tiny(.|\n)*e2e-done", timeout_s=30, real_cluster_only=True),
    Step("the operator logged no traceback", ("kubectl", "logs", "-n", NAMESPACE, "-l", OPERATOR_SELECTOR,
                                              "--tail=-1", "--prefix"),
         forbid=r"Traceback", timeout_s=30, real_cluster_only=True),
    Step("delete the GenerativeJob", ("kubectl", "delete", "gj", JOB, "-n", JOB_NAMESPACE, "--timeout=60s"),
         timeout_s=70),
    Step("its Job is garbage-collected", ("kubectl", "wait", "--for=delete", f"job/{JOB}", "-n", JOB_NAMESPACE,
                                          "--timeout=90s"), timeout_s=100),
)

UNINSTALL: tuple[Step, ...] = (
    Step("uninstall the chart", ("helm", "uninstall", RELEASE, "-n", NAMESPACE), timeout_s=120),
    Step("the operator is gone", ("kubectl", "wait", "--for=delete", "pod", "-l", OPERATOR_SELECTOR, "-n", NAMESPACE,
                                  "--timeout=120s"), timeout_s=130),
)

DIAGNOSTICS: tuple[Step, ...] = (  # on failure, for the test's output; never checked
    Step("objects", ("kubectl", "get", "nodes,deploy,pods,jobs,gj,lease,events", "-A", "-o", "wide")),
    Step("job", ("kubectl", "describe", "gj,job,pods", "-n", JOB_NAMESPACE)),
    Step("operator logs", ("kubectl", "logs", "-n", NAMESPACE, "-l", OPERATOR_SELECTOR, "--tail=200", "--prefix")),
)

TEARDOWN: tuple[Step, ...] = (
    Step("delete the kind cluster", ("kind", "delete", "cluster", "--name", CLUSTER), timeout_s=180),
)

STEPS: tuple[Step, ...] = CLUSTER_UP + INSTALL + LEADER + LIFECYCLE + UNINSTALL


def missing_prerequisites() -> str | None:
    """Why the kind run cannot happen here (no Docker engine, no kind, no kubectl/helm), or None."""
    if shutil.which("docker") is None:
        return "no docker binary on PATH"
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return "no running Docker engine (`docker info` failed)"
    for binary in ("kind", "kubectl", "helm"):
        if tool(binary) is None:
            return f"no {binary} on PATH or in .tools/bin (kubectl/helm: `make tools`)"
    return None


def environment(kubeconfig: Path, cache: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for the steps: one kubeconfig (kind writes it, kubectl/helm read it), a private
    kubectl discovery cache, and KUBECTL for scripts/kind-fake-gpus.sh."""
    return dict(base if base is not None else os.environ, KUBECONFIG=str(kubeconfig), KUBECACHEDIR=str(cache),
                KUBECTL=tool("kubectl") or "kubectl")


class StepFailed(AssertionError):
    pass


def _resolve(argv: tuple[str, ...]) -> list[str]:
    return [tool(argv[0]) or argv[0], *argv[1:]] if argv[0] in ("kubectl", "helm") else list(argv)


def run(step: Step, env: Mapping[str, str], done: Mapping[str, str] | None = None) -> str:
    """Run one step until its output shows what it must; return its stdout. ``done``: earlier stdouts by name."""
    deadline = time.monotonic() + step.timeout_s
    want = done.get(step.same_as) if step.same_as and done is not None else None
    if step.same_as and want is None:
        raise StepFailed(f"step {step.name!r}: compares with {step.same_as!r}, which has not run")
    while True:
        left = max(1.0, deadline - time.monotonic())
        try:
            r = subprocess.run(_resolve(step.argv), input=step.stdin, capture_output=True, text=True, cwd=ROOT,
                               env=dict(env), timeout=left)
            rc, out, err = r.returncode, r.stdout, r.stderr
        except subprocess.TimeoutExpired as exc:
            rc, out, err = -1, _text(exc.stdout), _text(exc.stderr) + f"\n(killed after {left:.0f} s)"
        problem = _problem(step, rc, out, want)
        if problem is None:
            return out.strip()
        retry = step.until is not None or step.same_as is not None
        if not retry or time.monotonic() + 2 > deadline:
            raise StepFailed(f"e2e step {step.name!r} failed: {problem}\n$ {' '.join(step.argv)}\n"
                             f"--- stdout\n{out[-3000:]}\n--- stderr\n{err[-3000:]}")
        time.sleep(2)


def _text(b: bytes | str | None) -> str:
    return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")


def _problem(step: Step, rc: int, out: str, want: str | None) -> str | None:
    text = out.strip()
    if rc != 0:
        return f"exit status {rc}"
    if step.until is not None and not re.search(step.until, text):
        return f"output does not match {step.until!r}"
    if step.forbid is not None and (m := re.search(step.forbid, text)):
        return f"output shows {m.group(0)!r}"
    if want is not None and text != want:
        return f"output {text!r} differs from step {step.same_as!r}: {want!r}"
    return None


def run_all(steps: Iterable[Step], env: Mapping[str, str], done: dict[str, str] | None = None,
            skip_real_cluster_only: bool = False) -> dict[str, str]:
    """Run steps in order (stopping at the first failure); return every stdout by step name."""
    done = {} if done is None else done
    for step in steps:
        if skip_real_cluster_only and step.real_cluster_only:
            continue
        done[step.name] = run(step, env, done)
    return done
