"""Optuna inside a cell: an ask/tell study over a few training knobs, stored on the shared storage.

Why inside the cell and not as a Tune searcher: Tune's OptunaSearch rejects grid axes, and the grid (teacher x
student x fraction x method) is categorical anyway. Each cell runs its own study in a `JournalFileBackend` file
under `<storage>/optuna/`, so a retried or resumed cell continues the study where it stopped instead of starting
over. The cell's result is its best trial; every trial is recorded in the cell's MLflow run.

Space syntax (values only, validated with the spec): `loguniform(lo, hi)`, `uniform(lo, hi)`, `int(lo, hi)`,
`choice(a, b, ...)`; keys are `train` fields, e.g. `{lr: "loguniform(1e-4, 1e-2)", alpha: "uniform(0.2, 0.8)"}`.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.storage import download, download_tree, is_remote, join, scratch, upload_file, upload_tree
from trainables.common import read_metrics

_DIST = re.compile(r"^\s*(loguniform|uniform|int|choice)\s*\((.*)\)\s*$")
TUNABLE = ("lr", "alpha", "tau", "lam", "dropout", "epochs", "batch_size", "self_distill")


@dataclass(frozen=True)
class Dist:
    kind: str
    args: tuple

    def suggest(self, trial, name: str):
        if self.kind == "loguniform":
            return trial.suggest_float(name, *self.args, log=True)
        if self.kind == "uniform":
            return trial.suggest_float(name, *self.args)
        if self.kind == "int":
            return trial.suggest_int(name, *self.args)
        return trial.suggest_categorical(name, list(self.args))


def parse_dist(text: str) -> Dist:
    """Parse one search-space entry; raises ValueError with what is allowed."""
    m = _DIST.match(str(text))
    if not m:
        raise ValueError(
            f"{text!r} is not a distribution; allowed: loguniform(lo, hi), uniform(lo, hi), "
            "int(lo, hi), choice(a, b, ...)"
        )
    kind, body = m.group(1), [a.strip() for a in m.group(2).split(",") if a.strip()]
    try:
        if kind == "choice":
            vals = tuple(float(a) if re.fullmatch(r"[-+0-9.eE]+", a) else a.strip("'\"") for a in body)
            if not vals:
                raise ValueError
            return Dist(kind, vals)
        lo, hi = (int(body[0]), int(body[1])) if kind == "int" else (float(body[0]), float(body[1]))
    except (ValueError, IndexError):
        raise ValueError(f"{text!r}: bounds must be two numbers") from None
    if len(body) != 2 or not lo < hi or (kind == "loguniform" and lo <= 0):
        raise ValueError(f"{text!r}: need lo < hi (and lo > 0 for loguniform)")
    return Dist(kind, (lo, hi))


def parse_space(space: dict[str, str]) -> dict[str, Dist]:
    out = {}
    for k, v in space.items():
        if k not in TUNABLE:
            raise ValueError(f"search.space: {k!r} cannot be searched; allowed: {', '.join(TUNABLE)}")
        out[k] = parse_dist(v)
    return out


def run_study(
    storage: str,
    key: str,
    space: dict[str, str],
    trials: int,
    metric: str,
    train_once: Callable[[dict[str, Any], Path], dict[str, float]],
    out: Path,
    log: Callable[[dict[str, float], int], None],
) -> dict[str, float]:
    """Run (or continue) the cell's study; copy the best trial's outputs into `out` and return its metrics.

    The journal lives at `<storage>/optuna/<cell key>.log`. On a folder (NFS/EFS) Optuna appends to it in place
    (its file backend locks the file). On an object store, which cannot append or lock, the trial works on a
    node-local copy and uploads it after every told trial: only the one trial running a cell writes its study, so
    a retried trial on any node downloads the last upload and continues (at most the trial in progress is lost)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    shared = join(storage, "optuna", f"{key}.log")
    folder = scratch(storage, "optuna") if is_remote(storage) else Path(storage) / "optuna"
    folder.mkdir(parents=True, exist_ok=True)
    if is_remote(storage):  # the bucket's journal, or none: never a stale copy from an earlier trial on this node
        (folder / f"{key}.log").unlink(missing_ok=True)
        download(shared, folder / f"{key}.log")
    study = optuna.create_study(
        study_name=key,
        direction="maximize",
        load_if_exists=True,
        storage=JournalStorage(JournalFileBackend(str(folder / f"{key}.log"))),
    )
    dists = parse_space(space)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    for _ in range(max(0, trials - len(done))):
        number = _one_trial(study, dists, folder / key, train_once, metric, log)
        if is_remote(storage):  # the trial's outputs first, then the journal that says it is done
            upload_tree(folder / key / f"trial-{number}", join(storage, "optuna", key, f"trial-{number}"))
            upload_file(folder / f"{key}.log", shared)
    best = folder / key / f"trial-{study.best_trial.number}"
    if is_remote(storage) and not best.is_dir():  # told by a trial that ran on another node
        download_tree(join(storage, "optuna", key, best.name), best)
    return _best(study, folder / key, out)


def _one_trial(study, dists: dict[str, Dist], trial_dirs: Path, train_once, metric: str, log) -> int:
    """Ask, train in a fresh folder, tell (a NaN metric counts as the worst value), log the trial on the cell."""
    trial = study.ask()
    params = {k: d.suggest(trial, k) for k, d in dists.items()}
    tdir = trial_dirs / f"trial-{trial.number}"
    shutil.rmtree(tdir, ignore_errors=True)
    tdir.mkdir(parents=True)
    metrics = train_once(params, tdir)
    value = float(metrics.get(metric, float("nan")))
    study.tell(trial, value if value == value else float("-inf"))
    numbers = {f"optuna/{k}": float(v) for k, v in params.items() if isinstance(v, (int, float))}
    log({"optuna/value": value, **numbers}, trial.number)
    return trial.number


def _best(study, trial_dirs: Path, out: Path) -> dict[str, float]:
    """Copy the best trial's outputs into the cell's folder; its metrics plus the study's summary."""
    best = study.best_trial
    for f in (trial_dirs / f"trial-{best.number}").iterdir():
        shutil.copy2(f, out / f.name)
    metrics = read_metrics(out)
    metrics.update(
        {
            "optuna/best_value": float(best.value),
            "optuna/n_trials": float(len(study.trials)),
            "optuna/best_trial": float(best.number),
            **{f"optuna/best/{k}": float(v) for k, v in best.params.items() if isinstance(v, (int, float))},
        }
    )
    return metrics
