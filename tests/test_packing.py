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
@given(st.lists(st.floats(0.0, 20_000.0), max_size=40), st.integers(1, 16), st.one_of(st.none(), st.integers(1, 10)))
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
