"""Progress you can watch: counts, elapsed time, an ETA from the cost model, what work waits for, a line per cell.

The driver reports events to one `Progress` object and never knows how they are shown (orchestrator/progress_views.py):
- on a terminal, a live view (rich): two bars (stages, cells) and a status line that ticks, with every event line
  printed above them;
- otherwise (CI logs, a pipe), plain lines: one per event, and a status line at most every `STATUS_EVERY_S`
  seconds while work is under way (plus one at each phase's end), so a log shows progress without flooding;
- in both cases every line, status lines included, is appended to `<storage>/logs/sweep.log` with a UTC time
  stamp, so nothing shown on the screen is missing from the file.
The ETA and the line formats are pure functions below (`eta_seconds`, `status_line`, `cell_line`): tested without
threads, terminals or clocks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from orchestrator.progress_views import View

STATUS_EVERY_S = 30.0  # plain output: at most one periodic status line this often (CI logs stay readable)
HEADLINE = ("acc/c", "acc/clean")  # a finished cell's line shows these, when its metrics have them
Phase = Literal["stage", "cell"]
State = Literal["pending", "running", "done", "failed"]


@dataclass
class Item:
    """One unit of work as progress sees it: a shared stage or a cell, with its cost-model estimate."""

    kind: Phase
    name: str
    est_s: float
    state: State = "pending"
    actual_s: float | None = None  # measured seconds of work computed in this sweep (None: cached, or not done)


@dataclass
class Snapshot:
    """Counts and times at one moment: what a status line or the live view shows."""

    stages: dict[State, int] = field(default_factory=dict)
    cells: dict[State, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    eta_s: float | None = None
    eta_model: bool = False  # eta_s is the cost model's raw estimate (nothing measured yet)
    waiting: str | None = None

    def total(self, kind: Phase) -> int:
        return sum((self.stages if kind == "stage" else self.cells).values())


# ------------------------------------------------------------------------------------------------ pure functions


def speed_ratio(items: Iterable[Item]) -> float | None:
    """Actual seconds over estimated seconds of the work finished so far: how far off the cost model is on this
    machine, today (None before any). Cached work took no time and says nothing, so it is left out."""
    est = act = 0.0
    for it in items:
        if it.state == "done" and it.actual_s is not None and it.est_s > 0:
            est += it.est_s
            act += it.actual_s
    return act / est if est > 0 and act > 0 else None


def eta_seconds(
    items: Iterable[Item], parallel: dict[str, int], since_event_s: float = 0.0, unmeasured: float | None = None
) -> float | None:
    """Seconds left: each phase's remaining estimate, scaled by its `speed_ratio` (the phase's own once one of its
    units has finished, else all finished work's: a trial's start-up makes cells slower than stages against the
    model) and divided by how many of its units run at once (never more than are left), summed over phases; minus
    the time since the last event, so the ETA counts down between events (never below zero). Failed work is not
    waited for. None while work remains and nothing has been measured yet (unless `unmeasured` gives the ratio to
    assume): the raw model leaves out start-up costs that dominate small sweeps, and a number that is off by 50x
    is worse than none."""
    items = list(items)
    overall, left = speed_ratio(items) or unmeasured, 0.0
    for kind in ("stage", "cell"):
        todo = [it.est_s for it in items if it.kind == kind and it.state in ("pending", "running")]
        ratio = speed_ratio(it for it in items if it.kind == kind) or overall
        if todo and ratio is None:
            return None
        left += sum(todo) * (ratio or 1.0) / max(1, min(parallel.get(kind, 1), len(todo)))
    return max(0.0, left - since_event_s)


def duration(seconds: float) -> str:
    """`42 s`, `3:07` (m:ss) or `1:02:03` (h:mm:ss)."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def metric_text(name: str, value: float) -> str:
    """Accuracies are stored as fractions and read as percentages."""
    if name.startswith("acc/") and 0.0 <= value <= 1.0:
        return f"{name} {100.0 * value:.1f} %"
    return f"{name} {value:.4g}"


def cell_line(label: str, seconds: float | None, metrics: dict[str, float], cached: bool = False) -> str:
    """`cell <label> done in 41 s: acc/c 73.6 %, acc/clean 88.0 %` (its headline metrics)."""
    shown = [metric_text(k, float(metrics[k])) for k in HEADLINE if isinstance(metrics.get(k), (int, float))]
    when = "from cache" if cached else (f"in {duration(seconds)}" if seconds is not None else "")
    return f"  cell {label} done {when}".rstrip() + (": " + ", ".join(shown) if shown else "")


# Before any result, the cost model's raw estimate is shown when it is at least this long: start-up costs (Ray,
# Train worker groups, MLflow), which it leaves out, are then a small share; a short sweep waits for a result.
RAW_ETA_MIN_S = 600.0


def eta_text(snap: Snapshot) -> str:
    """`ETA 0:40`; before anything was measured `ETA ~41:00 (cost model)` for long sweeps, else `ETA after the
    first result`; past the estimate `ETA overdue`."""
    busy = any(c.get(s) for c in (snap.stages, snap.cells) for s in ("pending", "running"))
    if snap.eta_s is None:
        return "ETA after the first result" if busy else "ETA 0 s"
    if snap.eta_model:
        return f"ETA ~{duration(max(snap.eta_s, 0.0))} (cost model)"
    return "ETA overdue" if busy and snap.eta_s <= 0 else f"ETA {duration(snap.eta_s)}"


def status_line(snap: Snapshot) -> str:
    """`[1:05] stages 5/5, cells 1/2 done, 1 running, 0 failed; ETA 0:40; waiting for 1 GPU: 0 of 2 nodes up`."""
    st, ce = snap.stages, snap.cells
    parts = [f"[{duration(snap.elapsed_s)} elapsed] stages {st.get('done', 0)}/{snap.total('stage')}"]
    if st.get("failed"):
        parts[0] += f" ({st['failed']} failed)"
    parts[0] += (
        f", cells {ce.get('done', 0)}/{snap.total('cell')} done, {ce.get('running', 0)} running, "
        f"{ce.get('failed', 0)} failed"
    )
    parts.append(eta_text(snap))
    if snap.waiting:
        parts.append(snap.waiting)
    return "; ".join(parts)


def stamped(line: str, now: float | None = None) -> str:
    """The log file's form of a line: a UTC time stamp, then the line as shown."""
    t = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    return f"{t.strftime('%Y-%m-%dT%H:%M:%SZ')} {line}"


# ------------------------------------------------------------------------------------------------ the sink


class Progress:
    """What the driver reports to. Thread-safe: the cell watcher reports from its own thread.

    Args:
        show: where lines and status go (`PlainView` or `LiveView`, see `open_progress`).
        log_file: every line shown is also appended here (None: no file).
        clock: monotonic seconds (tests pass a fake one).
    """

    def __init__(self, show: View, log_file: Path | None = None, clock: Callable[[], float] = time.monotonic):
        self.show, self.clock = show, clock
        self.t0 = self.last_event = clock()
        self.items: dict[str, Item] = {}
        self.parallel: dict[str, int] = {"stage": 1, "cell": 1}
        self.waiting_for: str | None = None
        self.lock = threading.RLock()
        self.errors: set[str] = set()
        self.file: IO[str] | None = None
        if log_file is not None:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(log_file, "a", encoding="utf-8")  # closed in close()
        show.attach(self)

    # ---- lines
    def log(self, line: str, err: bool = False) -> None:
        """A line for people (also the `SweepContext.log` callback): shown, and appended to the log file."""
        with self.lock:
            self.show.line(line, err)
            self.to_file(line)

    def to_file(self, line: str) -> None:
        """Append a line to the log file only (the live view's periodic status, a watcher's error)."""
        if self.file is not None:
            self.file.write(stamped(line) + "\n")
            self.file.flush()

    # ---- work
    def add(self, kind: Phase, work: dict[str, tuple[str, float]], parallel: int | None = None) -> None:
        """Register work of one phase: {key: (name, estimated seconds)}, and how many units run at once."""
        with self.lock:
            for key, (name, est) in work.items():
                self.items.setdefault(key, Item(kind, name, est))
            if parallel is not None:
                self.parallel[kind] = max(1, parallel)
            self.last_event = self.clock()  # new work: the ETA counts down from here
            self.show.update(self.snapshot())

    def stage_done(self, key: str, seconds: float | None) -> None:
        """A shared stage computed in this sweep finished (its line comes from the driver's records)."""
        self._finish(key, "done", seconds)

    def stage_failed(self, key: str) -> None:
        self._finish(key, "failed", None)

    def cell_done(self, key: str, seconds: float | None, metrics: dict[str, float], cached: bool = False) -> None:
        """A cell published its result: one line with its headline metrics (once, however often it is reported)."""
        with self.lock:
            it = self.items.get(key)
            if it is None or it.state in ("done", "failed"):
                return
            self._finish(key, "done", None if cached else seconds)
            self.log(cell_line(it.name, seconds, metrics, cached))

    def already(self, key: str, state: State) -> None:
        """Work settled before this invocation (a FINISHED or FAILED run, a cached entry): counted, not shown."""
        self._finish(key, state, None)

    def settled(self, key: str) -> bool:
        with self.lock:
            it = self.items.get(key)
            return it is not None and it.state in ("done", "failed")

    def cell_failed(self, key: str) -> None:
        """A cell failed (its error line comes from the driver's records)."""
        self._finish(key, "failed", None)

    def cells_running(self, keys: Iterable[str]) -> None:
        """The cells now training: exactly these (the others pending ones go back to waiting)."""
        keys = set(keys)
        with self.lock:
            for key, it in self.items.items():
                if it.kind == "cell" and it.state in ("pending", "running"):
                    it.state = "running" if key in keys else "pending"
            self.show.update(self.snapshot())

    def waiting(self, reason: str | None) -> None:
        """What queued work waits for (None: nothing). Logged when what is waited for changes ("waiting for 1 GPU"),
        not when only the numbers after the colon do: those change with every trial that starts or ends, and the
        status line carries them."""
        with self.lock:
            if reason and (self.waiting_for or "").split(":")[0] != reason.split(":")[0]:
                self.log(f"  {reason}")
            self.waiting_for = reason
            self.show.update(self.snapshot())

    def _finish(self, key: str, state: State, seconds: float | None) -> None:
        with self.lock:
            it = self.items.get(key)
            if it is None or it.state in ("done", "failed"):
                return
            it.state, it.actual_s = state, seconds
            self.last_event = self.clock()
            self.show.update(self.snapshot())

    def guarded(self, fn: Callable[[], None]) -> None:
        """Run a watcher's step; an exception goes to the log file (once per message), never to the sweep."""
        try:
            fn()
        except Exception as err:  # noqa: BLE001 - watching progress must never end a sweep
            msg = f"{type(err).__name__}: {err}"
            with self.lock:
                if msg not in self.errors:
                    self.errors.add(msg)
                    self.to_file(f"  (progress watcher: {msg})")

    # ---- status
    def elapsed(self) -> float:
        return self.clock() - self.t0

    def snapshot(self) -> Snapshot:
        with self.lock:
            snap = Snapshot(elapsed_s=self.clock() - self.t0, waiting=self.waiting_for)
            for it in self.items.values():
                counts = snap.stages if it.kind == "stage" else snap.cells
                counts[it.state] = counts.get(it.state, 0) + 1
            since = self.clock() - self.last_event
            snap.eta_s = eta_seconds(self.items.values(), self.parallel, since)
            if snap.eta_s is None:  # nothing measured yet: the raw model, if the sweep is long enough to trust it
                raw = eta_seconds(self.items.values(), self.parallel, 0.0, unmeasured=1.0) or 0.0
                if raw >= RAW_ETA_MIN_S:
                    snap.eta_s, snap.eta_model = raw - since, True
            return snap

    def status(self, force: bool = False) -> None:
        """A status line (plain view and log file) if one is due: forced at phase ends, else every STATUS_EVERY_S."""
        with self.lock:
            self.show.status(self.snapshot(), force)

    def close(self) -> None:
        """Stop the live view (its last frame stays on screen) and close the log file (idempotent)."""
        with self.lock:
            self.show.update(self.snapshot())
            self.show.close()
            if self.file is not None:
                self.file.close()
                self.file = None


@contextmanager
def watching(progress: Progress, step: Callable[[], None], every: float) -> Iterator[None]:
    """Run `step` every `every` seconds on a daemon thread while the block runs (the driver blocks in Ray); its
    exceptions go to the log file (`Progress.guarded`). The thread is stopped and joined when the block ends."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every):
            progress.guarded(step)

    thread = threading.Thread(target=loop, name="progress-watcher", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)
        progress.guarded(step)  # one last look: what finished since the last step is counted now
