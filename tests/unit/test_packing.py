"""Packing core: placement decisions, explanations, and no over-commit under any sequence."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

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


requests = st.builds(
    lambda i, whole, milli, mem, cpu: GpuRequest(f"r{i}", whole_gpus=whole, gpu_milli=milli,
                                                 gpu_memory_gib=mem, cpu_milli=cpu, memory_mib=1024),
    st.integers(0, 10**6), st.integers(0, 4), st.integers(1, 1000), st.floats(0, 90), st.integers(0, 20_000))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(requests, st.booleans()), max_size=60), st.sampled_from(["FirstFit", "BestFit"]))
def test_no_sequence_of_place_and_release_over_commits(ops: list, policy: str) -> None:
    state = ClusterState(NODES)
    placer = get_placer(policy)
    held: list[str] = []
    for req, release in ops:
        if release and held:
            state.release(held.pop(0))
        out = placer.place(state, req)
        if isinstance(out, Allocation) and req.key not in state.allocations:
            state.reserve(out)
            held.append(req.key)
        for node in NODES:
            assert all(0 <= m <= 1000 for m in state.free_milli(node.name))
            assert all(-1e-6 <= g <= node.gpu_memory_gib + 1e-6 for g in state.free_memory_gib(node.name))
            assert 0 <= state.free_cpu_milli(node.name) <= node.cpu_milli
            assert 0 <= state.free_memory_mib(node.name) <= node.memory_mib
    used = sum(a.gpu_milli * len(a.gpu_indices) for a in state.allocations.values())
    assert used == state.allocated_milli()
