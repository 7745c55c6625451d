"""Tune's plumbing around the trials that needs no Ray import: trial folder names, where Tune's own log goes, and
the one line a failed trial's error becomes (orchestrator/ray_backend.py uses them)."""

from __future__ import annotations

import logging
from pathlib import Path


def trial_dirname(pack_key: str) -> str:
    return pack_key[:17] if pack_key.startswith("pack-") else f"cell-{pack_key[:12]}"


def quiet_tune_logs(path: Path) -> None:
    """Tune logs each failed trial's traceback at ERROR level on stderr; users get one line per failed cell from
    us instead, and the tracebacks go to <storage>/logs/ray_tune.log."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    for name in ("ray.tune", "ray.train", "ray.air"):
        lg = logging.getLogger(name)
        lg.handlers = [handler]
        lg.propagate = False


def short_error(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    cause = [ln for ln in text if "Error" in ln or "error" in ln]
    return (cause[-1] if cause else (text[-1] if text else type(err).__name__))[:500]
