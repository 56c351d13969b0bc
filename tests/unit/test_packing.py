"""Packing core: placement decisions, explanations, and no over-commit under any sequence."""

from __future__ import annotations

from gensched.packing import Allocation, ClusterState, GpuNode, GpuRequest, OverCommitError, get_placer

NODES = [GpuNode("a", 2, "A100", 80.0, 16_000, 65536), GpuNode("b", 4, "L4", 24.0, 32_000, 131072)]


def test_best_fit_fills_a_partly_used_gpu_first() -> None:
    state = ClusterState(NODES)
    placer = get_placer("BestFit")
    first = placer.place(state, GpuRequest("x", gpu_milli=500, gpu_memory_gib=10))
    assert isinstance(first, Allocation)
    state.reserve(first)
    second = placer.place(state, GpuRequest("y", gpu_milli=500, gpu_memory_gib=10))
    assert isinstance(second, Allocation)
    assert (second.node, second.gpu_indices) == (first.node, first.gpu_indices)


def test_model_and_memory_constraints_are_explained() -> None:
    state = ClusterState(NODES)
    placer = get_placer("FirstFit")
    out = placer.place(state, GpuRequest("h", whole_gpus=1, gpu_models=("H100",)))
    assert not isinstance(out, Allocation) and "allowed GPU model ['H100']" in out.reason
    out = placer.place(state, GpuRequest("big", whole_gpus=1, gpu_memory_gib=120))
    assert not isinstance(out, Allocation) and "120.0 GiB" in out.reason and "int4" in out.reason
    out = placer.place(state, GpuRequest("wide", whole_gpus=8))
    assert not isinstance(out, Allocation) and "largest eligible node has 4" in out.reason
    fits = placer.place(state, GpuRequest("l4", whole_gpus=1, gpu_memory_gib=20, gpu_models=("L4",)))
    assert isinstance(fits, Allocation) and fits.node == "b"


def test_reserve_refuses_double_hand_out_and_rebuild_reports_conflicts() -> None:
    state = ClusterState(NODES)
    alloc = Allocation("j1", "a", (0,), 1000, 10.0, 1000, 1024)
    state.reserve(alloc)
    try:
        state.reserve(Allocation("j2", "a", (0,), 1, 1.0, 1, 1))
    except OverCommitError as exc:
        assert "GPU 0 on a" in str(exc)
    else:
        raise AssertionError("GPU 0 was handed out twice")
    _, conflicts = ClusterState.rebuild(NODES, [alloc, Allocation("j2", "a", (0,), 500, 1.0, 1, 1)])
    assert len(conflicts) == 1 and "j2" in conflicts[0]
