"""The batch lifecycle on a real cluster: kind, the operator image built from operator/Dockerfile, the chart.

Runs the steps of ``tests/e2e/plan.py`` in order: kind cluster with fake GPUs, image built and loaded,
``helm install`` with the local tag and pullPolicy Never, rollout and a Lease holder, a shell-command batch
GenerativeJob to Succeeded with its placement and Events checked, delete, uninstall; the cluster is
deleted at the end whatever happened. Skipped (with the reason) only where Docker or kind is absent;
``tests/integration/test_e2e_plan.py`` checks the same steps and manifests without Docker.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e import plan

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]


def test_batch_lifecycle_on_kind_with_the_chart_and_the_built_image(tmp_path: Path) -> None:
    missing = plan.missing_prerequisites()
    if missing:
        pytest.skip(f"the kind e2e needs Docker and kind: {missing}; "
                    "tests/integration/test_e2e_plan.py checks its steps on the API emulator")
    env = plan.environment(tmp_path / "kubeconfig", tmp_path / "kubectl-cache")
    done: dict[str, str] = {}
    try:
        plan.run_all(plan.STEPS, env, done)
    except plan.StepFailed as exc:
        notes = []
        for step in plan.DIAGNOSTICS:
            try:
                notes.append(f"--- {step.name}\n{plan.run(step, env)}")
            except plan.StepFailed as diag:
                notes.append(f"--- {step.name}: {diag}")
        raise AssertionError(f"{exc}\n\n" + "\n".join(notes)) from None
    finally:
        for step in plan.TEARDOWN:
            try:
                plan.run(step, env)
            except plan.StepFailed as exc:  # report, but do not hide the test's own outcome
                print(exc)
    assert done["placement node"] == done["its pod ran on the placed node"]
    assert set(done) == {s.name for s in plan.STEPS}  # every step ran
