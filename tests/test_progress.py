"""Progress you can watch (orchestrator/progress.py, progress_views.py): the ETA arithmetic and the plain lines, as
pure functions with hand-computed values; the sink's counting and its log file with a fake clock; and, on the
session's real smoke sweep (non-TTY), that the printed lines carry the counts, the cells' metrics and the ETA and
all reach `<storage>/logs/sweep.log`."""

from __future__ import annotations

import contextlib
import io
import re
import threading

import pytest

from orchestrator.progress import (
    Item,
    Progress,
    Snapshot,
    cell_line,
    duration,
    eta_seconds,
    speed_ratio,
    status_line,
    watching,
)
from orchestrator.progress_views import LiveView, PlainView
from orchestrator.ray_backend import describe_wait

# ------------------------------------------------------------------------------------------------ ETA arithmetic


def test_speed_ratio_compares_actual_with_estimate_of_computed_work_only() -> None:
    items = [
        Item("stage", "a", 10.0, "done", 30.0),  # took 3x its estimate
        Item("stage", "b", 20.0, "done", 30.0),  # 1.5x
        Item("stage", "c", 50.0, "done", None),  # cached: took no time, says nothing
        Item("cell", "d", 40.0, "pending"),
    ]
    assert speed_ratio(items) == pytest.approx(60.0 / 30.0)
    assert speed_ratio([Item("cell", "d", 40.0)]) is None  # nothing measured yet


def test_eta_scales_remaining_by_speed_and_divides_by_parallelism() -> None:
    items = [
        Item("stage", "a", 10.0, "done", 20.0),  # ratio 2
        Item("stage", "b", 6.0, "running"),
        Item("stage", "c", 6.0, "pending"),
        Item("cell", "x", 30.0, "pending"),
        Item("cell", "y", 30.0, "running"),
        Item("cell", "z", 30.0, "failed"),  # not waited for
        Item("cell", "w", 30.0, "done", None),
    ]
    # stages: 12 s * 2 / 2 at once (3 slots, 2 left) = 12; cells: 60 s * 2 / 2 at once = 60
    assert eta_seconds(items, {"stage": 3, "cell": 2}) == pytest.approx(72.0)
    assert eta_seconds(items, {"stage": 3, "cell": 2}, since_event_s=8.0) == pytest.approx(64.0)
    assert eta_seconds(items, {"stage": 3, "cell": 2}, since_event_s=500.0) == 0.0
    assert eta_seconds(items, {}) == pytest.approx(12.0 * 2 + 60.0 * 2)  # unknown parallelism: one at a time
    # once a cell has finished, cells go by their own ratio (a trial's start-up makes them slower than stages)
    items.append(Item("cell", "v", 10.0, "done", 50.0))
    assert eta_seconds(items, {"stage": 3, "cell": 2}) == pytest.approx(12.0 + 60.0 * 5 / 2)
    # the last unit runs alone, however many slots there are
    assert eta_seconds([Item("cell", "a", 10.0, "done", 20.0), Item("cell", "b", 10.0)], {"cell": 4}) == 20.0


def test_no_eta_before_anything_was_measured() -> None:
    assert eta_seconds([Item("stage", "a", 1.0, "done", None), Item("cell", "b", 2.0)], {}) is None
    assert eta_seconds([Item("stage", "a", 1.0, "done", None)], {}) == 0.0  # all cached: nothing left


# ------------------------------------------------------------------------------------------------ plain lines


@pytest.mark.parametrize("seconds,text", [(0.4, "0 s"), (41.2, "41 s"), (60, "1:00"), (187, "3:07"), (3723, "1:02:03")])
def test_duration(seconds, text) -> None:
    assert duration(seconds) == text


def test_cell_line_shows_headline_accuracies_in_percent() -> None:
    m = {"acc/c": 0.7361, "acc/clean": 0.88, "mfr": 0.3, "time/train_s": 12.0}
    assert cell_line("ours-clip_vit_b16-t_resnet34-a0.5-s0", 41.2, m) == (
        "  cell ours-clip_vit_b16-t_resnet34-a0.5-s0 done in 41 s: acc/c 73.6 %, acc/clean 88.0 %"
    )
    assert cell_line("apt-vit_small-tnone-anone-s0", None, {}) == "  cell apt-vit_small-tnone-anone-s0 done"
    assert cell_line("x", None, {"acc/clean": 0.5}, cached=True) == "  cell x done from cache: acc/clean 50.0 %"


def test_status_line() -> None:
    snap = Snapshot(
        stages={"done": 4, "running": 1, "failed": 1},
        cells={"done": 1, "running": 2, "pending": 3},
        elapsed_s=65.0,
        eta_s=40.0,
        waiting="waiting for 1 GPU: 0 of 2 nodes up",
    )
    assert status_line(snap) == (
        "[1:05 elapsed] stages 4/6 (1 failed), cells 1/6 done, 2 running, 0 failed; ETA 40 s; "
        "waiting for 1 GPU: 0 of 2 nodes up"
    )
    assert status_line(Snapshot()) == "[0 s elapsed] stages 0/0, cells 0/0 done, 0 running, 0 failed; ETA 0 s"
    busy = Snapshot(cells={"running": 1}, eta_s=None)
    assert status_line(busy).endswith("; ETA after the first result")
    busy.eta_s = 0.0
    assert status_line(busy).endswith("; ETA overdue")


def test_waiting_words_from_ray_numbers() -> None:
    gpu, cpu = (("CPU", 1.0), ("GPU", 1.0)), (("CPU", 1.0),)
    cold = {"CPU": 8.0, "trial_driver": 1000.0}  # the head only: GPU workers scale from 0
    assert describe_wait({gpu: 1}, cold, cold, [cold], 2) == "waiting for 1 GPU: 0 of 2 nodes up"
    assert describe_wait({gpu: 3}, cold, cold, [cold], 0) == "waiting for 1 GPU (x3): no node has one"
    laptop, busy = {"CPU": 2.0}, {"CPU": 0.0}
    assert describe_wait({cpu: 2}, laptop, busy, [laptop], 0) == "waiting for 1 CPU (x2): 2 of 2 in use"
    assert describe_wait({cpu: 1}, laptop, {"CPU": 1.0}, [laptop], 0) is None  # it fits: about to start
    assert describe_wait({}, laptop, busy, [laptop], 0) is None


# ------------------------------------------------------------------------------------------------ the sink


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _progress(tmp_path, every: float = 30.0) -> tuple[Progress, io.StringIO, FakeClock]:
    out, clock = io.StringIO(), FakeClock()
    p = Progress(PlainView(out=out, err=out, every=every), tmp_path / "logs" / "sweep.log", clock=clock)
    return p, out, clock


def test_counts_eta_and_cell_lines_once(tmp_path) -> None:
    p, out, clock = _progress(tmp_path)
    p.add("stage", {"s1": ("pool", 10.0), "s2": ("teacher", 20.0)}, parallel=2)
    p.add("cell", {"c1": ("ours-a", 30.0), "c2": ("apt-a", 30.0)}, parallel=1)
    p.already("s1", "done")
    clock.t += 40.0
    p.stage_done("s2", 40.0)  # 2x the estimate
    snap = p.snapshot()
    assert snap.stages == {"done": 2} and snap.cells == {"pending": 2}
    assert snap.eta_s == pytest.approx(60.0 * 2.0) and snap.elapsed_s == 40.0
    p.cells_running(["c1"])
    p.cell_done("c1", 12.0, {"acc/c": 0.5})
    p.cell_done("c1", 12.0, {"acc/c": 0.5})  # the watcher and the driver both report it: one line
    p.cell_failed("c2")
    assert p.snapshot().cells == {"done": 1, "failed": 1} and p.snapshot().eta_s == 0.0
    assert out.getvalue().splitlines() == ["  cell ours-a done in 12 s: acc/c 50.0 %"]


def test_a_long_sweep_shows_the_cost_models_eta_before_its_first_result(tmp_path) -> None:
    """A cold Table 4 computes for ~15 min before its first stage ends: it shows the raw model's estimate, marked
    as such and counting down; a short sweep (start-up costs dominate) waits for its first result."""
    p, _, clock = _progress(tmp_path)
    p.add("stage", {"t1": ("teacher-a", 900.0), "t2": ("teacher-b", 700.0)}, parallel=2)
    p.add("cell", {"c1": ("ours-a", 300.0)}, parallel=1)
    snap = p.snapshot()
    assert snap.eta_model and snap.eta_s == pytest.approx(1600.0 / 2 + 300.0)
    clock.t += 100.0
    assert status_line(p.snapshot()).endswith("; ETA ~16:40 (cost model)")
    p.stage_done("t2", 700.0)  # measured: the ETA is scaled by what finished, no longer the raw model
    assert not p.snapshot().eta_model
    short, _, _ = _progress(tmp_path / "short")
    short.add("stage", {"s": ("pool", 10.0)}, parallel=2)
    assert short.snapshot().eta_s is None and "after the first result" in status_line(short.snapshot())


def test_plain_status_lines_are_spaced_and_all_lines_reach_the_log_file(tmp_path) -> None:
    p, out, clock = _progress(tmp_path, every=30.0)
    p.status()  # nothing registered: nothing under way, nothing to say
    p.add("cell", {"c1": ("ours-a", 30.0)})
    p.status()
    clock.t += 10.0
    p.status()  # too soon
    clock.t += 25.0
    p.status()
    p.waiting("waiting for 1 CPU: 2 of 2 in use")
    p.waiting("waiting for 1 CPU: 2 of 2 in use")  # unchanged: said once
    p.waiting("waiting for 1 CPU: 1 of 2 in use")  # only the numbers changed: the status line has them
    p.log("boom", err=True)
    p.status(force=True)
    p.close()
    lines = out.getvalue().splitlines()
    stamps = [ln.split("]")[0] for ln in lines if ln.startswith("[")]
    assert stamps == ["[0 s elapsed", "[35 s elapsed", "[35 s elapsed"]
    assert sum("waiting for 1 CPU" in ln for ln in lines) == 2  # its own line, then in the forced status line
    assert lines[-1].endswith("; waiting for 1 CPU: 1 of 2 in use")
    logged = (tmp_path / "logs" / "sweep.log").read_text().splitlines()
    assert [ln.split(" ", 1)[1] for ln in logged] == lines
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ", ln) for ln in logged)


def test_lines_reach_the_terminal_while_tune_redirects_stdout(tmp_path, capsys) -> None:
    """ray_backend.run_trials sends sys.stdout to Tune's log while trials run: progress lines must not follow."""
    p = Progress(PlainView(), tmp_path / "sweep.log")
    with open(tmp_path / "tune.log", "w") as f, contextlib.redirect_stdout(f):
        p.log("  cell a done in 3 s")
    assert capsys.readouterr().out == "  cell a done in 3 s\n" and (tmp_path / "tune.log").read_text() == ""


def test_a_failing_watcher_step_is_logged_never_raised_and_the_thread_ends(tmp_path) -> None:
    p, out, _ = _progress(tmp_path)
    calls = threading.Event()

    def step() -> None:
        calls.set()
        raise RuntimeError("cluster gone")

    with watching(p, step, every=0.01):
        assert calls.wait(5)
    assert not any(t.name == "progress-watcher" for t in threading.enumerate())
    p.close()
    log = (tmp_path / "logs" / "sweep.log").read_text()
    assert log.count("progress watcher: RuntimeError: cluster gone") == 1 and out.getvalue() == ""


def test_live_view_renders_bars_and_times_without_a_terminal(tmp_path) -> None:
    from rich.console import Console

    buf = io.StringIO()
    view = LiveView(Console(file=buf, force_terminal=True, width=100))
    p = Progress(view, tmp_path / "sweep.log")
    p.add("stage", {"s1": ("pool", 10.0)})
    p.add("cell", {"c1": ("ours-a", 30.0), "c2": ("apt-a", 30.0)})
    p.stage_done("s1", 10.0)
    p.cell_done("c1", 5.0, {"acc/clean": 0.9})
    p.close()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buf.getvalue())
    assert "cell ours-a done in 5 s: acc/clean 90.0 %" in text
    assert "stages" in text and "1/1" in text and "1/2" in text and "elapsed" in text and "ETA" in text
    assert "cell ours-a done in 5 s" in (tmp_path / "sweep.log").read_text()


# ------------------------------------------------------------------------------------------------ the real sweep


@pytest.mark.integration
@pytest.mark.timeout(1800)
def test_smoke_sweep_plain_output_and_log_file(smoke_sweep) -> None:
    """The session's smoke sweep ran with stdout captured (not a terminal): plain lines, all of them in the log."""
    assert smoke_sweep.returncode == 0, smoke_sweep.stdout[-2000:] + smoke_sweep.stderr[-3000:]
    assert "Downloading artifacts" not in smoke_sweep.stdout + smoke_sweep.stderr  # MLflow's per-run progress bars
    lines = [ln for ln in smoke_sweep.stdout.splitlines() if ln.strip()]
    status = [ln for ln in lines if re.match(r"\[[0-9: s]+ elapsed\] stages \d+/\d+, cells \d+/\d+ done", ln)]
    assert any("stages 9/9," in ln for ln in status), lines  # the forced line when the stages are through
    assert "cells 2/2 done, 0 running, 0 failed; ETA 0 s" in status[-1]
    assert any(re.search(r"; ETA (\d+ s|\d+:\d\d|after the first result|overdue)", ln) for ln in status[:-1])
    done = [
        re.match(r"  cell (\S+) done in (\d+ s|\d+:\d\d): acc/c \d+\.\d %, acc/clean \d+\.\d %$", ln) for ln in lines
    ]
    assert len({m.group(1) for m in done if m}) == 2, lines
    logged = {ln.split(" ", 1)[1] for ln in (smoke_sweep.storage / "logs" / "sweep.log").read_text().splitlines()}
    assert [ln for ln in lines if ln not in logged] == []
