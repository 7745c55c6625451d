"""Driver-side bookkeeping: what each stage and cell run carries in MLflow, and the metrics derived on the driver.

Why on the driver: some numbers of a run need other runs' results, which only the driver has in view: a cell's
`time/pipeline_s` adds the upstream stages its method pays for (main paper Figure 1), and flip *rates* divide by
the reference model's flip probabilities (Table 6, Figure 4), which may finish after the stage being logged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator import ray_backend
from orchestrator.cache import Cache
from orchestrator.plan import Plan, Stage, iter_upstream
from orchestrator.tracking import FAILED, FINISHED, RunLogger, SweepTracker, flatten
from trainables.common import read_metrics
from trainables.evaluate import with_flip_rates
from trainables.kinds import PIPELINE_KINDS, Cell
from trainables.outcomes import OUTCOMES_FILE


@dataclass
class Outcome:
    """What one invocation did, by cell key (written to `results/<sweep>/summary.json`)."""

    finished: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped_failed: list[str] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)  # --rerun-failed: cells never run (or never finished), left
    cached: list[str] = field(default_factory=list)
    computed_stages: int = 0
    cached_stages: int = 0


@dataclass
class SweepContext:
    """Everything the driver's steps share for one sweep invocation."""

    plan: Plan
    cache: Cache
    storage: str  # the shared location: a folder or an object store URI (orchestrator/storage.py)
    tracker: SweepTracker
    parent_id: str
    sweep_id: str
    cluster: ray_backend.ClusterInfo
    log: Callable[[str], None] = print
    logs: Path | None = None  # this node's folder for the driver's logs (ray_tune.log); None: <storage>/logs

    def gpus_per_worker(self) -> float:
        """GPUs each stage task / Train worker requests: the spec's, unless `ray_backend.uses_gpus` says no."""
        res = self.plan.spec.resources
        return res.gpus_per_worker if ray_backend.uses_gpus(self.cluster, res.gpus_per_worker) else 0.0

    def metrics(self, stage: Stage) -> dict[str, float]:
        return read_metrics(self.cache.get(stage.kind, stage.key))


# ------------------------------------------------------------------------------------------------ names, params


def stage_params(stage: Stage) -> dict[str, Any]:
    """A stage run's params: its kind, key, model and seed, its sizes as plain params, and its resolved inputs as
    `cfg.*`."""
    inp = stage.inputs.payload()
    p: dict[str, Any] = {"stage": stage.kind, "stage_key": stage.key}
    model = inp.get("model")
    if isinstance(model, dict):
        p["model"] = model["name"]
    if isinstance(inp.get("teacher"), str):
        p["model"] = inp["teacher"]
    for key in ("seed", "data_fraction"):
        if key in inp:
            p[key] = "none" if inp[key] is None else inp[key]
    p.update(_size_params(inp))
    p.update({f"cfg.{k}": v for k, v in flatten({k: v for k, v in inp.items() if k != "model"}).items()})
    return p


_TRAINING_SECTIONS = ("pretrain", "teacher_train", "pool", "train")  # the one a stage's inputs carry, if any
_SIZE_KNOBS = ("epochs", "batch_size", "lr", "n_images", "pool_images", "ae_epochs", "full_ft_epochs", "full_ft_lr")


def _size_params(inp: dict[str, Any]) -> dict[str, Any]:
    """Plain, unprefixed params (`n_train`, `image_size`, `epochs`, `n_images`, ...) that the MLflow UI's runs
    table can filter, group and compare stage runs by: the dotted `cfg.*` record is complete but reads poorly
    there. An unset size (`None`: the whole split or pool) reads `all`."""
    out: dict[str, Any] = {}
    data = inp.get("data")
    if isinstance(data, dict):
        out["data_source"] = data.get("source")
        out.update({k: "all" if data.get(k) is None else data[k] for k in ("image_size", "n_train", "n_test")})
    for section in _TRAINING_SECTIONS:
        cfg = inp.get(section)
        if isinstance(cfg, dict):
            out.update({k: "all" if cfg[k] is None else cfg[k] for k in _SIZE_KNOBS if k in cfg})
    return out


def stage_name(stage: Stage) -> str:
    p = stage_params(stage)
    return f"{stage.kind}{'-' + p['model'] if 'model' in p else ''}-{stage.key[:8]}"


def cell_params(plan: Plan, cell: Cell) -> dict[str, Any]:
    """A cell run's params: every axis (filterable in the UI's runs table), the data sizes and the train config."""
    ax = cell.axes()
    params = {
        "student": ax["student"],
        "teacher": ax["teacher"] or "none",
        "data_fraction": "none" if ax["data_fraction"] is None else ax["data_fraction"],
        "method": ax["method"],
        "seed": ax["seed"],
    }
    spec = plan.spec
    params.update({f"train.{k}": v for k, v in spec.train.model_dump(mode="json").items() if k != "fail_cells"})
    params.update({"profile": spec.profile, "eval": ",".join(s.value for s in spec.eval)})
    params.update(_size_params({"data": spec.data.model_dump(mode="json")}))
    return params


# ------------------------------------------------------------------------------------------------ stage runs


def stage_done(
    sc: SweepContext,
    task: dict,
    result: dict | None,
    err: BaseException | None,
    failed: dict[str, str],
    outcome: Outcome,
) -> None:
    """`run_dag`'s callback: close the stage's run as FINISHED with its metrics, or FAILED with one error line."""
    logger = sc.tracker.logger(task["run_id"])
    if err is not None:
        failed[task["key"]] = f"{type(err).__name__}: {str(err).strip().splitlines()[-1][:300] if str(err) else ''}"
        logger.set_tags({"error": failed[task["key"]]})
        logger.finish(FAILED)
        sc.log(f"  stage {task['kind']} {task['key'][:8]} FAILED: {failed[task['key']]}")
        return
    outcome.computed_stages += 1
    logger.log_metrics(result["metrics"], step=0)
    log_outcomes(sc, logger, sc.plan.stages[task["key"]])
    logger.finish(FINISHED)
    sc.log(f"  stage {stage_name(sc.plan.stages[task['key']])} done in {result['wall_s']:.0f} s")


def open_stage_run(sc: SweepContext, stage: Stage, cache_hit: bool) -> str:
    """Open (or reopen) the stage's child run of this sweep, with its params; returns its run id."""
    hit = "true" if cache_hit else "false"
    return sc.tracker.open_child(
        sc.parent_id,
        sc.sweep_id,
        "stage",
        stage.key,
        stage_name(stage),
        {"stage": stage.kind, "cache_hit": hit},
        stage_params(stage),
    )


def log_cached_stage(sc: SweepContext, stage: Stage) -> None:
    """A stage this sweep found in the cache still gets its run (tag `cache_hit=true`), so every table can name it."""
    logger = sc.tracker.logger(open_stage_run(sc, stage, cache_hit=True))
    logger.set_tags({"cache_hit": "true"})
    logger.log_metrics(sc.metrics(stage), step=0)
    log_outcomes(sc, logger, stage)
    logger.finish(FINISHED)


def log_outcomes(sc: SweepContext, logger: RunLogger, stage: Stage) -> None:
    """The stage's per-example outcomes file as an artifact of its run (claims bootstrap from it; see
    trainables/outcomes.py), when its body wrote one."""
    f = sc.cache.get(stage.kind, stage.key) / OUTCOMES_FILE
    if f.exists():
        logger.log_artifact(f)


def flip_rates_for(sc: SweepContext, metrics: dict[str, float], seed: int, prefix: str = "") -> dict[str, float]:
    """`fr/*` and `mfr` of stored flip probabilities against the seed's reference model (if it has run)."""
    key = sc.plan.references.get(seed)
    if key is None or not sc.cache.has("naive_teacher", key):
        return {}
    ref = sc.metrics(sc.plan.stages[key])
    fp = {k.removeprefix(prefix): v for k, v in metrics.items() if k.startswith(prefix + "fp/")}
    return {prefix + k: v for k, v in with_flip_rates(fp, ref).items()}


def log_teacher_flip_rates(sc: SweepContext) -> None:
    """Teachers' mFR (Table 6) needs the reference's FPs, so it is logged once every stage has run."""
    runs = sc.tracker.child_runs(sc.sweep_id, "stage")
    for stage in sc.plan.stages.values():
        run = runs.get(stage.key)
        if stage.kind not in ("naive_teacher", "robustify_teacher") or run is None:
            continue
        if not sc.cache.has(stage.kind, stage.key):
            continue
        fr = flip_rates_for(sc, sc.metrics(stage), stage.inputs.seed)
        if fr:
            sc.tracker.logger(run.info.run_id).log_metrics(fr, step=0)


# ------------------------------------------------------------------------------------------------ cell runs


def pipeline_seconds(sc: SweepContext, key: str, cell_metrics: dict[str, float]) -> float:
    """The cell's own training plus the upstream stages that are part of its method's cost."""
    total = float(cell_metrics.get("time/train_s", 0.0))
    for st in iter_upstream(sc.plan, key):
        if st.kind in PIPELINE_KINDS and sc.cache.has(st.kind, st.key):
            total += float(sc.metrics(st).get("time/stage_s", 0.0))
    return total


def finish_cell(sc: SweepContext, run_id: str, key: str, cached: bool) -> None:
    """Log a published cell's final metrics (with the driver-derived ones) and close its run FINISHED."""
    stage = sc.plan.stages[key]
    metrics = sc.metrics(stage)
    metrics["time/pipeline_s"] = pipeline_seconds(sc, key, metrics)
    seed = stage.inputs.cell.seed
    metrics.update(flip_rates_for(sc, metrics, seed))
    metrics.update(flip_rates_for(sc, metrics, seed, prefix="teacher/"))
    logger = sc.tracker.logger(run_id)
    if cached:
        logger.set_tags({"cache_hit": "true"})
    final = {k: v for k, v in metrics.items() if not k.startswith("train/")}
    logger.log_metrics(final, step=int(sc.plan.spec.train.epochs))
    log_outcomes(sc, logger, stage)
    logger.finish(FINISHED)


def fail_cell(sc: SweepContext, run_id: str, key: str, error: str, outcome: Outcome) -> None:
    logger = sc.tracker.logger(run_id)
    logger.set_tags({"error": error[:5000]})
    logger.finish(FAILED)
    outcome.failed[key] = error
    sc.log(f"  cell {key[:10]} FAILED: {error}")
