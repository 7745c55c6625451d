"""Cell packing (orchestrator/packing.py): which cells share a trial."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.packing import MAX_STARTUP_SHARE, TRIAL_STARTUP_S, pack_cells, pack_key

TARGET = TRIAL_STARTUP_S / MAX_STARTUP_SHARE


def _flat(packs: list[list[str]]) -> list[str]:
    return [k for p in packs for k in p]


def test_cheap_cells_fill_every_slot_and_no_more() -> None:
    cells = [(f"c{i:02d}", 3.0) for i in range(24)]
    packs = pack_cells(cells, slots=2)
    assert len(packs) == 2 and sorted(map(len, packs)) == [12, 12]
    assert sorted(_flat(packs)) == [k for k, _ in cells]
    assert all(p == sorted(p) for p in packs)  # plan order inside a pack


def test_expensive_cells_run_alone_and_paper_sized_cells_are_never_packed() -> None:
    cells = [("big1", 5 * 3600.0), ("small1", 2.0), ("big2", TARGET), ("small2", 2.0), ("small3", 2.0)]
    packs = pack_cells(cells, slots=8)
    assert ["big1"] in packs and ["big2"] in packs
    assert sorted(_flat(packs)) == sorted(k for k, _ in cells)
    assert pack_cells([(f"c{i}", 3600.0) for i in range(6)], slots=2) == [[f"c{i}"] for i in range(6)]


def test_enough_cheap_work_opens_more_packs_than_slots() -> None:
    cells = [(f"c{i}", TARGET / 4) for i in range(16)]  # 4 trials' worth of work on 2 slots
    packs = pack_cells(cells, slots=2)
    assert len(packs) == 4 and all(len(p) == 4 for p in packs)


def test_explicit_cells_per_trial() -> None:
    cells = [(f"c{i}", 1.0) for i in range(7)]
    assert pack_cells(cells, slots=4, cells_per_trial=1) == [[k] for k, _ in cells]
    packs = pack_cells(cells, slots=1, cells_per_trial=3)
    assert len(packs) == 3 and max(map(len, packs)) <= 3 and sorted(_flat(packs)) == [k for k, _ in cells]
    assert pack_cells([], slots=2) == []


def test_packs_balance_estimated_work() -> None:
    cells = [("a", 50.0), ("b", 40.0), ("c", 30.0), ("d", 20.0), ("e", 10.0), ("f", 10.0)]
    packs = pack_cells(cells, slots=2)
    est = dict(cells)
    loads = sorted(sum(est[k] for k in p) for p in packs)
    assert loads == [80.0, 80.0]


def test_pack_key_keeps_a_lone_cells_name() -> None:
    assert pack_key(["abc"]) == "abc"
    a, b = pack_key(["k1", "k2"]), pack_key(["k2", "k1"])
    assert a.startswith("pack-") and a != b and pack_key(["k1", "k2"]) == a


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 20_000.0), max_size=40), st.integers(1, 16),
       st.one_of(st.none(), st.integers(1, 10)))
def test_every_cell_lands_in_exactly_one_pack(secs: list[float], slots: int, per_trial: int | None) -> None:
    cells = [(f"k{i:03d}", s) for i, s in enumerate(secs)]
    packs = pack_cells(cells, slots, per_trial)
    assert sorted(_flat(packs)) == [k for k, _ in cells]
    assert all(packs)
    if per_trial is not None:
        assert all(len(p) <= per_trial for p in packs)
    else:
        assert all(len(p) == 1 for p in packs if any(dict(cells)[k] >= TARGET for k in p))
        cheap = [k for k, s in cells if s < TARGET]
        assert sum(1 for p in packs if dict(cells)[p[0]] < TARGET) >= min(slots, len(cheap))


# ------------------------------------------------------------------------------------ the pack loop in a worker


def test_pack_loop_retries_a_failing_cell_in_place_then_records_it_and_goes_on(tmp_path, monkeypatch) -> None:
    from orchestrator import execution

    calls: list[tuple[str, object]] = []

    def fake_cell(cfg, rank, world, device, resume, checkpoint, wrap):
        calls.append((cfg["key"], resume))
        if cfg["key"] == "bad":
            raise ValueError("boom")
        return {"acc/clean": 1.0}

    monkeypatch.setattr(execution, "run_cell_in_worker", fake_cell)
    pack = {"cells": [{"key": k} for k in ("a", "bad", "c")], "threads": 1, "train_storage": str(tmp_path),
            "resources": {"max_retries": 2}}
    done = execution.run_pack_in_worker(pack, 0, 1, "cpu", None, "node", resume_for=lambda k: {"epoch": 0, "of": k},
                                        checkpoint_for=lambda k: None)
    assert [k for k, _ in calls] == ["a", "bad", "bad", "bad", "c"]  # 1 try + 2 retries, then on to the next
    assert all(r == {"epoch": 0, "of": k} for k, r in calls)          # each attempt resumes its own cell
    assert done == [("a", {"acc/clean": 1.0}), ("bad", None), ("c", {"acc/clean": 1.0})]
    err = execution.error_file(tmp_path, "bad").read_text()
    assert err.startswith("ValueError: boom") and "Traceback" in err
    assert not execution.error_file(tmp_path, "a").exists()


def test_lone_cells_and_multi_worker_packs_leave_failures_to_ray_train(tmp_path, monkeypatch) -> None:
    import pytest

    from orchestrator import execution

    def fake_cell(cfg, *a):
        raise ValueError("boom")

    monkeypatch.setattr(execution, "run_cell_in_worker", fake_cell)
    for cells, world in (([{"key": "x"}], 1), ([{"key": "x"}, {"key": "y"}], 2)):
        pack = {"cells": cells, "threads": 1, "train_storage": str(tmp_path), "resources": {"max_retries": 3}}
        with pytest.raises(ValueError):
            execution.run_pack_in_worker(pack, 0, world, "cpu", None, "n", resume_for=lambda k: None,
                                         checkpoint_for=lambda k: None)
    assert not (tmp_path / execution.ERRORS_DIR).exists()


# ------------------------------------------------------------------------------------ trial sizing on a cluster


def test_gpu_requests_and_concurrency_on_local_and_joined_clusters() -> None:
    from orchestrator.ray_backend import ClusterInfo, max_concurrent, uses_gpus

    laptop = ClusterInfo(cpus=2, gpus=0, has_driver_resource=True, started_here=True)
    assert not uses_gpus(laptop, 1.0)  # CPU fallback
    assert max_concurrent(laptop, 1, 1, 0, 24, None) == 2
    gpu_box = ClusterInfo(cpus=16, gpus=8, has_driver_resource=True, started_here=True)
    assert uses_gpus(gpu_box, 1.0) and max_concurrent(gpu_box, 2, 4, 1.0, 24, None) == 4
    # an autoscaling cluster whose GPU workers start at 0: request GPUs and submit every trial
    cold_cluster = ClusterInfo(cpus=8, gpus=0, has_driver_resource=True, started_here=False)
    assert uses_gpus(cold_cluster, 1.0) and max_concurrent(cold_cluster, 1, 4, 1.0, 12, None) == 12
    assert max_concurrent(cold_cluster, 1, 4, 1.0, 12, 3) == 3
    assert not uses_gpus(cold_cluster, 0.0)
