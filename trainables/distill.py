"""The `cell` stage: distil into the student's tuned tail (or run a baseline), then evaluate every selection rule.

Methods (method.md §3, §5):
    ours      three heads, KD from the robust teacher + the uncertainty-aware combined target
    wo_kd     three heads, every soft target replaced by CE on the labels (same data per head)
    apt       same tuned portion, one head (the `combined` slot), CE on clean ∪ augmented, no teacher
    full_ft   all parameters on clean ∪ augmented (the `full_finetune` stage; evaluated from images)
    wise_ft   (1 - w) θ_original + w θ_full_ft, w = train.wise_alpha
    original  the untouched (pre)trained student (CLIP: zero-shot through the class-prompt embeddings)

Why features: everything before the split point is frozen, in eval mode and dropout-free, so training the tail
on cached features is exact and costs a few million parameters per step instead of the whole student. With
`use_cache=False` (benchmark "naive" mode, and the exactness test) the same loop encodes images every batch.

Evaluation lives in trainables/cell_eval.py; complete fine-tuning (full_ft, wise_ft) in trainables/full_ft.py.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainables.artifacts import (
    load_bundles,
    load_features,
    load_model_folder,
    load_pool,
    load_targets,
    model_classes,
    student_from_deps,
)
from trainables.augment import sample_fraction
from trainables.cell_eval import evaluate_cell
from trainables.common import (
    StageContext,
    Timer,
    apply_chunked,
    iterate_minibatches,
    precise_bn,
    read_metrics,
    save,
    seed_everything,
    to_float,
)
from trainables.full_ft import evaluate_full
from trainables.kinds import CellInputs, body
from trainables.losses import ThreeHeadLoss
from trainables.shards import Chain, Rows
from trainables.train_loop import Checkpoints, adam, run_epochs
from trainables.vocab import HEADS, Head, Method


class _Tail(nn.Module):
    """The trained part: shared trunk + heads (what DDP wraps)."""

    def __init__(self, trunk: nn.Module, heads: nn.ModuleDict) -> None:
        super().__init__()
        self.trunk, self.heads = trunk, heads

    def forward(self, f: Tensor, heads: tuple[str, ...]) -> dict[str, Tensor]:
        z = self.trunk(f)
        return {h: self.heads[h](z) for h in heads}


# --------------------------------------------------------------------------------------------- data


class _TrainData:
    """Clean and augmented training inputs (features, or images in uncached mode) with teacher/S0 logits."""

    def __init__(self, inputs: CellInputs, deps: dict[str, Path], student: nn.Module, use_cache: bool) -> None:
        a, seed = inputs.cell.data_fraction, inputs.cell.seed
        pool = load_pool(deps["pool"])
        ci = sample_fraction(len(pool["train"]["y"]), a, seed)
        pi = sample_fraction(len(pool["pool"]["y"]), a, seed)
        self.y_clean, self.y_aug = pool["train"]["y"][ci], pool["pool"]["y"][pi]
        if use_cache:  # memory-mapped features, rows gathered per batch (trainables/shards.py)
            feats = load_features(deps["features"])
            self.x_clean, self.x_aug = Rows(feats["train"]["x"], ci), Rows(feats["pool"]["x"], pi)
        else:
            self.x_clean, self.x_aug = pool["train"]["x"][ci], pool["pool"]["x"][pi]
        self.encode = (lambda x: x) if use_cache else (lambda x: student.encode(to_float(x)))
        self.t_clean = self.t_aug = None
        if inputs.method == Method.ours and "teacher" in deps:
            if use_cache and "targets" in deps:
                t = load_targets(deps["targets"])
                self.t_clean, self.t_aug = Rows(t["train"], ci), Rows(t["pool"], pi)
            else:
                teacher = load_model_folder(deps["teacher"]).eval()
                self.t_clean, self.t_aug = apply_chunked(teacher, self.x_clean), apply_chunked(teacher, self.x_aug)

    def __len__(self) -> int:
        return len(self.y_aug)


# --------------------------------------------------------------------------------------------- training


def _loss(method: Method, tail: nn.Module, f_c: Tensor, f_a: Tensor, yc: Tensor, ya: Tensor, tc, ta, s0, task):
    if method == Method.apt:  # one head, in the `combined` slot
        logits = tail(torch.cat([f_c, f_a]), (Head.combined.value,))[Head.combined.value]
        loss = F.cross_entropy(logits, torch.cat([yc, ya]))
        return loss, {"combined": loss.detach()}
    out_c = tail(f_c, HEADS)
    out_a = tail(f_a, HEADS)
    head_logits = {h: (out_c[h], out_a[h]) for h in out_c}
    s0c, s0a = s0
    return task(head_logits, yc, ya, tc, ta, s0c, s0a)


def train_tail(inputs: CellInputs, student: nn.Module, td: _TrainData, ctx: StageContext) -> dict[str, float]:
    """Adam over trunk + heads for `epochs`; per-epoch metrics and checkpoints; resumes from `ctx.resume`."""
    tr, method = inputs.train, inputs.method
    g = seed_everything(inputs.cell.seed)
    tail = _Tail(student.trunk, student.heads)
    model = ctx.wrap_model(tail)
    optim = adam([p for p in tail.parameters() if p.requires_grad], tr["lr"])
    task = ThreeHeadLoss(
        alpha=tr["alpha"], tau=tr["tau"], self_distill_weight=tr["self_distill"], use_kd=(method == Method.ours)
    )

    def batches(_epoch: int):
        # the clean partner of every augmented batch: one permutation per epoch, drawn before the batch order.
        # Partners are drawn for the GLOBAL batch and each data-parallel rank takes its slice of both, so the
        # workers see every augmented row and every partner once per epoch between them (one worker: as ever).
        cperm = torch.randperm(len(td.y_clean), generator=g)
        mb = iterate_minibatches(len(td), tr["batch_size"], g)
        r, w = ctx.rank, ctx.world_size
        return (
            (cperm[(torch.arange(len(idx)) + b * len(idx)) % len(cperm)][r::w], idx[r::w]) for b, idx in enumerate(mb)
        )

    def step(batch: tuple[Tensor, Tensor], _step: int) -> tuple[Tensor, dict[str, Tensor]]:
        cidx, idx = batch
        with torch.no_grad():
            f_c, f_a = td.encode(td.x_clean[cidx]), td.encode(td.x_aug[idx])
            s0 = (student.original(f_c), student.original(f_a)) if method == Method.ours else (None, None)
        tc = td.t_clean[cidx] if td.t_clean is not None else None
        ta = td.t_aug[idx] if td.t_aug is not None else None
        loss, parts = _loss(method, model, f_c, f_a, td.y_clean[cidx], td.y_aug[idx], tc, ta, s0, task)
        return loss, {"loss": loss.detach(), **{f"loss_{k}": v for k, v in parts.items()}}

    last = run_epochs(tail, optim, tr["epochs"], batches, step, ctx, Checkpoints("tail", g))
    if tr.get("precise_bn", True):
        feats = Chain(td.x_clean, td.x_aug) if isinstance(td.x_clean, Rows) else torch.cat([td.x_clean, td.x_aug])
        precise_bn(tail, feats, lambda f: tail(td.encode(f), HEADS), seed=inputs.cell.seed)
    tail.eval()
    return last


# --------------------------------------------------------------------------------------------- entry point

_TEACHER_KEYS = ("acc/clean", "acc/c", "acc/pool", "fp/mean", "init/acc/clean", "init/acc/clean_gain_last")


@torch.no_grad()
def regime_metrics(deps: dict[str, Path], student: nn.Module, td: _TrainData | None) -> dict[str, float]:
    """What the regime checks read (issue #13), copied onto the cell so one cell run carries them: the teacher's
    clean / C / pool accuracy (and its pretraining's plateau), S0's plateau, and S0 on the cell's pool images."""
    out: dict[str, float] = {}
    if "teacher" in deps:
        t = read_metrics(deps["teacher"])
        out.update({f"teacher/{k}": v for k, v in t.items() if k in _TEACHER_KEYS or k.startswith("fp/")})
    if "student" in deps:
        s0 = read_metrics(deps["student"])
        out.update({f"s0/{k}": v for k, v in s0.items() if k.startswith("acc/clean")})
    if td is not None and len(td.y_aug):
        pred = apply_chunked(lambda f: student.original(td.encode(f)).argmax(-1), td.x_aug)
        out["original/acc/pool"] = float((pred == td.y_aug).float().mean())
    return out


@body("cell")
def run_cell(
    inputs: CellInputs, deps: dict[str, Path], out: Path, ctx: StageContext, use_cache: bool = True
) -> dict[str, float]:
    """Distil (or run the baseline) and evaluate; writes the tail's state to `out/tail.pt`."""
    method = inputs.method
    t0 = time.perf_counter()
    if method in (Method.full_ft, Method.wise_ft):
        return evaluate_full(inputs, deps, out)
    bundles_meta = load_bundles(deps["eval"]) if "student" not in deps else None
    classes = (bundles_meta or {}).get("classes") or model_classes(deps["student"])
    student = student_from_deps(inputs.model, inputs.data["image_size"], deps, classes, inputs.train["dropout"]).eval()
    use_cache = use_cache and "features" in deps
    orig_trunk = copy.deepcopy(student.trunk).eval()
    metrics: dict[str, float] = {}
    if method != Method.original:
        td = _TrainData(inputs, deps, student, use_cache)
        with Timer() as t:
            last = train_tail(inputs, student, td, ctx)
        metrics.update({"time/train_s": t.s, **{k: v for k, v in last.items()}})
        save({k: v for k, v in student.state_dict().items() if k.startswith(("trunk.", "heads."))}, out / "tail.pt")
    else:
        metrics["time/train_s"] = 0.0
    if ctx.rank == 0:
        metrics.update(evaluate_cell(inputs, deps, student, use_cache, orig_trunk, out))
        counts = student.param_counts()
        metrics.update({"params/tuned": float(counts["tuned"]), "params/total": float(counts["total"])})
    metrics.update(regime_metrics(deps, student, td if method != Method.original else None))
    metrics["time/cell_s"] = time.perf_counter() - t0
    return metrics
