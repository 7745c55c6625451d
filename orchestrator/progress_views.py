"""How progress is shown: a live terminal view (rich), plain lines for logs, or lines handed to a callable.

`open_progress` picks one: the live view when stdout is a terminal, plain lines otherwise. Views only render what
`Progress` (orchestrator/progress.py) hands them; the log file is written by `Progress` whatever the view.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import IO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from orchestrator.progress import STATUS_EVERY_S, Progress, Snapshot, duration, eta_text, status_line


class View:
    """How progress is shown. `Progress` calls these under its lock; `due` spaces the periodic status lines."""

    progress: Progress
    every: float = STATUS_EVERY_S
    last_status: float | None = None

    def attach(self, progress: Progress) -> None:
        self.progress = progress

    def line(self, text: str, err: bool = False) -> None:
        raise NotImplementedError

    def update(self, snap: Snapshot) -> None:
        """New counts (live view only)."""

    def status(self, snap: Snapshot, force: bool) -> None:
        """A status line if one is due: forced, or `every` seconds after the last while work is under way."""
        self.update(snap)
        now = self.progress.clock()
        busy = any(snap.stages.get(s, 0) + snap.cells.get(s, 0) for s in ("pending", "running"))
        if force or (busy and (self.last_status is None or now - self.last_status >= self.every)):
            self.last_status = now
            self.status_line(status_line(snap))

    def status_line(self, text: str) -> None:
        self.progress.log(text)

    def close(self) -> None:
        pass


class PlainView(View):
    """Plain lines for logs: each event as it comes, a status line at most every `every` seconds (or forced)."""

    def __init__(self, out: IO[str] | None = None, err: IO[str] | None = None, every: float = STATUS_EVERY_S):
        # the streams of the moment we start, held on to: Tune redirects sys.stdout into its log while trials run
        # (ray_backend.run_trials), and the lines printed meanwhile must still reach the user
        self.out, self.err, self.every = out or sys.stdout, err or sys.stderr, every

    def line(self, text: str, err: bool = False) -> None:
        print(text, file=self.err if err else self.out, flush=True)


class LinesView(View):
    """Event and status lines to a callable (a driver run without a terminal of its own: tests, library use)."""

    def __init__(self, say: Callable[[str], None]):
        self.say = say

    def line(self, text: str, err: bool = False) -> None:
        self.say(text)


class LiveView(View):
    """A live terminal view (rich): event lines scroll above two bars and a status line that ticks every second.

    Rendering reads only the last snapshot handed to `update` (never the `Progress` lock: rich's refresh thread
    holds the console's lock while it renders, and `Progress.log` holds its own while it prints)."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(file=sys.stdout)  # held on to, as in PlainView
        self.snap: tuple[Snapshot, float] | None = None
        self.live = Live(console=self.console, get_renderable=self._render, refresh_per_second=2, transient=False)

    def attach(self, progress: Progress) -> None:
        super().attach(progress)
        self.live.start()

    def line(self, text: str, err: bool = False) -> None:
        self.console.print(text, style="red" if err else None, markup=False, highlight=False, soft_wrap=True)

    def update(self, snap: Snapshot) -> None:
        self.snap = (snap, self.progress.clock())

    def status_line(self, text: str) -> None:
        self.progress.to_file(text)  # the screen has the live view; the log file gets the periodic line

    def _render(self) -> RenderableType:
        if self.snap is None:
            return Text("")
        snap, taken = self.snap
        age = self.progress.clock() - taken
        grid = Table.grid(padding=(0, 1))
        for kind, counts in (("stages", snap.stages), ("cells", snap.cells)):
            total, done = sum(counts.values()), counts.get("done", 0)
            extra = f", {counts.get('running', 0)} running" if kind == "cells" else ""
            extra += f", {counts['failed']} failed" if counts.get("failed") else ""
            grid.add_row(kind, ProgressBar(total=max(total, 1), completed=done, width=40), f"{done}/{total}{extra}")
        times = f"elapsed {duration(snap.elapsed_s + age)}"
        times += " · " + eta_text(replace(snap, eta_s=None if snap.eta_s is None else max(0.0, snap.eta_s - age)))
        return Group(grid, Text(times + (f" · {snap.waiting}" if snap.waiting else ""), style="dim"))

    def close(self) -> None:
        if self.snap is not None:
            self.update(self.snap[0])
        self.live.stop()


def open_progress(log_file: Path | None, live: bool | None = None) -> Progress:
    """A `Progress` showing a live view on a terminal and plain lines otherwise (`live` forces either)."""
    if live is None:
        live = sys.stdout.isatty()
    return Progress(LiveView() if live else PlainView(), log_file)
