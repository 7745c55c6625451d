"""Run one stage of the DAG (orchestrator/plan.py) in this process: `run_stage(kind, inputs, deps, out, ctx)`.

Every stage body is a plain-PyTorch function `fn(inputs, deps, out, ctx) -> metrics`, registered for its kind with
`@body(kind)` (trainables/kinds.py), where `inputs` is the kind's frozen inputs dataclass (exactly what its cache
key hashes), `deps` maps roles (`pool`, `eval`, `student`, `teacher`, `targets`, `features`, `naive_teacher`,
`full_ft`) to the folders of upstream cache entries, `out` is an empty folder the stage fills, and the returned
metrics are also written to `out/metrics.json`. Nothing here knows about Ray or MLflow.

Why this module imports every body module: a body registers when its module is imported, so importing the
dispatcher is what makes `BODIES` complete, with no import inside a function.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from trainables import classifiers, distill, features, full_ft, sets  # noqa: F401 - each registers its bodies
from trainables.common import StageContext, write_metrics
from trainables.kinds import BODIES, StageInputs, get_kind


def run_stage(
    kind: str, inputs: StageInputs | Mapping[str, Any], deps: dict[str, Path], out: Path, ctx: StageContext
) -> dict[str, float]:
    """Run one stage into `out` and write its metrics.json.

    Args:
        kind: a kind of trainables/kinds.py.
        inputs: the kind's inputs dataclass, or its payload (the JSON dict the content key hashes).
        deps: upstream role -> cache folder.
        out: an empty folder the body fills.
        ctx: reporter, threads, checkpoint/resume hooks.

    Returns:
        The body's metrics plus `time/start_unix` and `time/end_unix` (for the overhead benchmark).

    Raises:
        ValueError: for an unknown kind.
        TypeError: for inputs of another kind's dataclass.
    """
    spec = get_kind(kind)
    if isinstance(inputs, Mapping):
        inputs = spec.inputs.from_payload(inputs)
    elif not isinstance(inputs, spec.inputs):
        raise TypeError(f"run_stage({kind!r}): inputs are {type(inputs).__name__}; needs {spec.inputs.__name__}")
    if ctx.threads:
        torch.set_num_threads(int(ctx.threads))
    start = time.time()
    metrics = BODIES[kind](inputs, deps, out, ctx)
    metrics.update({"time/start_unix": start, "time/end_unix": time.time()})
    write_metrics(out, metrics)
    return metrics
