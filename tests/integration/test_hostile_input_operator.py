"""Reproducers of issue 12 through the real operator: corrupted annotations, invalid edits of running jobs,
ambiguous default policies, long names, hostile values — and a fuzz run with valid jobs in between."""

from __future__ import annotations

import random

import pytest
import yaml

from tests.conftest import Cluster, OperatorProcess, wait_for
from tests.harness.tools import Kubectl

pytestmark = pytest.mark.integration


def job(name: str, gpus: float = 1, **meta: object) -> dict:
    return {"apiVersion": "gensched.io/v1alpha1", "kind": "GenerativeJob", "metadata": {"name": name, **meta},
            "spec": {"mode": "Batch",
                     "model": {"name": "llama-2-7b", "parametersBillions": 7, "image": "x"},
                     "resources": {"gpus": gpus}, "batch": {"input": "s3://in"}}}


def apply(crds: Kubectl, *docs: dict, check: bool = True):
    return crds("apply", "-f", "-", stdin=yaml.safe_dump_all(list(docs)), check=check)


def test_forged_operator_annotations_are_ignored(cluster: Cluster, operator: OperatorProcess, crds: Kubectl) -> None:
    cluster.add_node("gpu-a", gpus=2)
    apply(crds, job("forged", annotations={"gensched.io/last-handled-configuration": "{]"}),
          job("admit", annotations={"gensched.io/admit": "{not json"}))
    cluster.wait_phase("forged", "Succeeded")
    cluster.wait_phase("admit", "Succeeded")
    crds("delete", "gj", "admit", "--timeout=30s")  # no finalizer: never stuck Terminating
    assert cluster.gj("admit") is None


def test_an_invalid_edit_of_a_running_job_keeps_its_outcome(cluster: Cluster, operator: OperatorProcess,
                                                            crds: Kubectl) -> None:
    cluster.add_node("gpu-a", gpus=1)
    cluster.standin.hold.add("edited")
    apply(crds, job("edited"))
    cluster.wait_phase("edited", "Running")
    crds("patch", "gj", "edited", "--type=merge", "-p", '{"spec":{"resources":{"gpus":1.5}}}')
    wait_for(lambda: any(c["type"] == "SpecApplied" and c["reason"] == "InvalidEdit"
                         for c in ((cluster.gj("edited") or {}).get("status") or {}).get("conditions") or []),
             what="the ignored edit reported")
    assert cluster.phase("edited") == "Running"
    cluster.standin.hold.discard("edited")
    cluster.wait_phase("edited", "Succeeded")  # the Job's outcome is not lost


def test_two_default_policies_are_an_error_that_names_them(cluster: Cluster, operator: OperatorProcess,
                                                           crds: Kubectl) -> None:
    cluster.add_node("gpu-a", gpus=1)
    for name in ("pol-a", "pol-b"):
        apply(crds, {"apiVersion": "gensched.io/v1alpha1", "kind": "SchedulingPolicy", "metadata": {"name": name},
                     "spec": {"default": True}})
    apply(crds, job("orphan"))
    gj = cluster.wait_phase("orphan", "Pending")
    wait_for(lambda: "pol-a, pol-b" in ((cluster.gj("orphan") or {}).get("status") or {}).get("message", ""),
             what="both defaults named")
    crds("delete", "schedulingpolicy", "pol-b")
    cluster.wait_phase("orphan", "Succeeded")
    del gj


def test_a_long_name_fits_label_values_and_hostile_text_is_bounded(cluster: Cluster, operator: OperatorProcess,
                                                                   crds: Kubectl) -> None:
    cluster.add_node("gpu-a", gpus=1)
    long = "a" * 70 + "-job"
    apply(crds, job(long))
    gj = cluster.wait_phase(long, "Succeeded")
    jname = gj["status"]["jobName"]
    assert len(jname) <= 63
    j = cluster.get("batch", "jobs", "default", jname)
    assert j is not None and all(len(v) <= 63 for v in j["metadata"]["labels"].values())
    hostile = job("hostile")
    hostile["spec"]["policyRef"] = "x" * 10_000
    r = apply(crds, hostile, check=False)
    if r.returncode == 0:  # the schema allowed it: the operator reports it, bounded
        wait_for(lambda: ((cluster.gj("hostile") or {}).get("status") or {}).get("message"), what="a message")
        msg = cluster.gj("hostile")["status"]["message"]  # type: ignore[index]
        assert "policyRef" in msg and len(msg) <= 1024
        assert all(len(e.get("message") or "") <= 1024 for e in cluster.events_for("hostile"))


def _hostile(rng: random.Random, i: int) -> dict:
    doc = job(f"fuzz-{i}")
    spec = doc["spec"]
    choice = rng.randrange(9)
    if choice == 0:
        spec["batch"]["deadline"] = rng.choice(["999999999d", "99999999999d", "0s", "-1h", "1e9h"])
    elif choice == 1:
        spec["batch"]["estimatedDuration"] = rng.choice(["99999999999d", "1h" * 50, ""])
    elif choice == 2:
        spec["resources"]["gpus"] = rng.choice([0, -1, 9, 1.5, 1e-9, "2", None])
    elif choice == 3:
        spec["resources"]["cpu"] = rng.choice(["1e12", "100n", ".5", "-1", "abc", "1" * 100])
    elif choice == 4:
        spec["model"]["parametersBillions"] = rng.choice([0, -5, 1e30, float("inf")])
    elif choice == 5:
        spec["priority"] = rng.choice([2**40, -(2**40), "high"])
    elif choice == 6:
        spec["tolerations"] = [{"key": "k" * 400, "operator": rng.choice(["Exists", "Nope"])}]
    elif choice == 7:
        spec["priorityClassName"] = rng.choice(["Bad_Name", "x" * 300, "missing-class"])
    else:
        spec["unknownField"] = {"nested": ["junk"] * 3}
    return doc


def test_fuzzed_manifests_never_hang_a_job_and_valid_jobs_still_run(cluster: Cluster, operator: OperatorProcess,
                                                                    crds: Kubectl) -> None:
    cluster.add_node("gpu-a", gpus=8)
    rng = random.Random(12)
    accepted: list[str] = []
    valid: list[str] = []
    for i in range(60):
        doc = _hostile(rng, i)
        if apply(crds, doc, check=False).returncode == 0:
            accepted.append(doc["metadata"]["name"])
        if i % 10 == 0:
            ok = job(f"valid-{i}", 0.25)
            apply(crds, ok)
            valid.append(ok["metadata"]["name"])
    for name in valid:
        cluster.wait_phase(name, "Succeeded", timeout=90)

    def settled(name: str) -> bool:
        st = (cluster.gj(name) or {}).get("status") or {}
        return bool(st.get("phase")) and bool(st.get("message") or st.get("phase") == "Succeeded")

    for name in accepted:  # every accepted one got a phase and words, never silence
        wait_for(lambda name=name: settled(name), 60, what=f"{name} to be handled")
        st = cluster.gj(name)["status"]  # type: ignore[index]
        if st["phase"] in ("Invalid", "Pending") and "spec." not in st.get("message", ""):
            assert st["phase"] == "Pending", st
    assert "Traceback" not in operator.logs()
