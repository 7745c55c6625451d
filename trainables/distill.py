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
"""
from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainables.common import (StageContext, Timer, apply_chunked, iterate_minibatches, load, precise_bn, read_metrics, save,
                               seed_everything, to_float)
from trainables.evaluate import classifier_predictor, evaluate_suites, restricted_argmax
from trainables.inference import predict_all
from trainables.losses import ThreeHeadLoss
from trainables.train_loop import Checkpoints, adam, run_epochs
from trainables.stages import load_bundles, load_model_folder, load_pool, student_from_deps

THREE_HEADED = ("ours", "wo_kd")


def _fraction_indices(n: int, a: float, seed: int) -> Tensor:
    from trainables.augment import sample_fraction

    return sample_fraction(n, a, seed)


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

    def __init__(self, inputs: dict, deps: dict[str, Path], student: nn.Module, use_cache: bool) -> None:
        cell = inputs["cell"]
        a, seed = cell["data_fraction"], cell["seed"]
        pool = load_pool(deps["pool"])
        ci = _fraction_indices(len(pool["train"]["y"]), a, seed)
        pi = _fraction_indices(len(pool["pool"]["y"]), a, seed)
        self.y_clean, self.y_aug = pool["train"]["y"][ci], pool["pool"]["y"][pi]
        if use_cache:
            feats = load(deps["features"] / "features.pt")
            self.x_clean, self.x_aug = feats["train"]["x"][ci], feats["pool"]["x"][pi]
        else:
            self.x_clean, self.x_aug = pool["train"]["x"][ci], pool["pool"]["x"][pi]
        self.encode = (lambda x: x) if use_cache else (lambda x: student.encode(to_float(x)))
        self.t_clean = self.t_aug = None
        if cell["method"] == "ours" and "teacher" in deps:
            if use_cache and "targets" in deps:
                t = load(deps["targets"] / "targets.pt")
                self.t_clean, self.t_aug = t["train"][ci], t["pool"][pi]
            else:
                teacher = load_model_folder(deps["teacher"]).eval()
                self.t_clean, self.t_aug = apply_chunked(teacher, self.x_clean), apply_chunked(teacher, self.x_aug)

    def __len__(self) -> int:
        return len(self.y_aug)


# --------------------------------------------------------------------------------------------- training


def _loss(method: str, tail: nn.Module, f_c: Tensor, f_a: Tensor, yc: Tensor, ya: Tensor, tc, ta, s0, task):
    if method == "apt":
        logits = tail(torch.cat([f_c, f_a]), ("combined",))["combined"]
        loss = F.cross_entropy(logits, torch.cat([yc, ya]))
        return loss, {"combined": loss.detach()}
    out_c = tail(f_c, ("clean", "unclean", "combined"))
    out_a = tail(f_a, ("clean", "unclean", "combined"))
    head_logits = {h: (out_c[h], out_a[h]) for h in out_c}
    s0c, s0a = s0
    return task(head_logits, yc, ya, tc, ta, s0c, s0a)


def train_tail(inputs: dict, student: nn.Module, td: _TrainData, ctx: StageContext) -> dict[str, float]:
    """Adam over trunk + heads for `epochs`; per-epoch metrics and checkpoints; resumes from `ctx.resume`."""
    cell, tr = inputs["cell"], inputs["train"]
    method = cell["method"]
    g = seed_everything(cell["seed"])
    tail = _Tail(student.trunk, student.heads)
    model = ctx.wrap_model(tail)
    optim = adam([p for p in tail.parameters() if p.requires_grad], tr["lr"])
    task = ThreeHeadLoss(alpha=tr["alpha"], tau=tr["tau"], self_distill_weight=tr["self_distill"],
                         use_kd=(method == "ours"))

    def batches(_epoch: int):
        # the clean partner of every augmented batch: one permutation per epoch, drawn before the batch order
        cperm = torch.randperm(len(td.y_clean), generator=g)
        mb = iterate_minibatches(len(td), tr["batch_size"], g, ctx.rank, ctx.world_size)
        return ((cperm[(torch.arange(len(idx)) + b * len(idx)) % len(cperm)], idx) for b, idx in enumerate(mb))

    def step(batch: tuple[Tensor, Tensor], _step: int) -> tuple[Tensor, dict[str, Tensor]]:
        cidx, idx = batch
        with torch.no_grad():
            f_c, f_a = td.encode(td.x_clean[cidx]), td.encode(td.x_aug[idx])
            s0 = (student.original(f_c), student.original(f_a)) if method == "ours" else (None, None)
        tc = td.t_clean[cidx] if td.t_clean is not None else None
        ta = td.t_aug[idx] if td.t_aug is not None else None
        loss, parts = _loss(method, model, f_c, f_a, td.y_clean[cidx], td.y_aug[idx], tc, ta, s0, task)
        return loss, {"loss": loss.detach(), **{f"loss_{k}": v for k, v in parts.items()}}

    last = run_epochs(tail, optim, tr["epochs"], batches, step, ctx, Checkpoints("tail", g))
    if tr.get("precise_bn", True):
        feats = torch.cat([td.x_clean, td.x_aug])
        precise_bn(tail, feats, lambda f: tail(td.encode(f), ("clean", "unclean", "combined")))
    tail.eval()
    return last


# --------------------------------------------------------------------------------------------- evaluation


class _Restricted(nn.Module):
    """A head whose logits are cut to `subset` (ImageNet-R/-A, ObjectNet): MC-dropout uncertainty, the KL between
    heads and every selection rule then see only the classes the set can contain, as its published protocol does."""

    def __init__(self, head: nn.Module, subset: Tensor) -> None:
        super().__init__()
        self.head, self.subset = head, subset

    def forward(self, z: Tensor) -> Tensor:
        return self.head(z).index_select(-1, self.subset.to(z.device))


def _rules_predictor(student: nn.Module, n: int, lam: float, encode=None):
    def predict(f: Tensor, subset: Tensor | None = None) -> dict[str, Tensor]:
        f = encode(f) if encode is not None else f
        heads = student.heads if subset is None else nn.ModuleDict(
            {h: _Restricted(m, subset) for h, m in student.heads.items()})
        r = predict_all(heads, student.trunk(f), n_samples=n, lam=lam)
        back = (lambda v: v) if subset is None else (lambda v: subset.to(v.device)[v])  # noqa: E731
        out = {"main": back(r["pred"]["ours"]), **{k: back(v) for k, v in r["pred"].items()}}
        out.update({f"head_{h}": back(v) for h, v in r["head_pred"].items()})
        out.update({f"chosen/{k}": v for k, v in r["chosen"].items()})
        return out
    return predict


def _single_head_predictor(student: nn.Module, head: str, encode=None):
    def predict(f: Tensor, subset: Tensor | None = None) -> dict[str, Tensor]:
        f = encode(f) if encode is not None else f
        return {"main": restricted_argmax(student.heads[head](student.trunk(f)), subset)}
    return predict


def _original_predictor(student: nn.Module, encode=None):
    def predict(f: Tensor, subset: Tensor | None = None) -> dict[str, Tensor]:
        f = encode(f) if encode is not None else f
        return {"main": restricted_argmax(student.original(f), subset)}
    return predict


def _eval_inputs(inputs: dict, deps: dict[str, Path], student: nn.Module, use_cache: bool):
    """Eval bundles as features (cached) or images, and the matching `encode` for image inputs."""
    if use_cache:
        return load(deps["features"] / "features.pt")["eval"], None
    return load_bundles(deps["eval"]), (lambda x: student.encode(x))


def evaluate_cell(inputs: dict, deps: dict[str, Path], student: nn.Module, use_cache: bool,
                  orig_trunk: nn.Module) -> dict[str, float]:
    method, tr = inputs["cell"]["method"], inputs["train"]
    suites = inputs["eval"]
    bundles, enc = _eval_inputs(inputs, deps, student, use_cache)
    embed_in = enc or (lambda f: f)
    if method in THREE_HEADED:
        pred = _rules_predictor(student, tr["mc_samples"], tr["lam"], enc)
    elif method == "apt":
        pred = _single_head_predictor(student, "combined", enc)
    else:  # original
        pred = _original_predictor(student, enc)
    trunk = orig_trunk if method == "original" else student.trunk
    metrics = evaluate_suites(pred, bundles, suites, embed=lambda f: trunk(embed_in(f)).flatten(1))
    if method != "original":  # the untouched student on the same sets: "pretrained vs tuned" in one run
        o = evaluate_suites(_original_predictor(student, enc), bundles, [s for s in suites if s in ("clean", "c")])
        metrics.update({f"original/{k}": v for k, v in o.items() if k in ("acc/clean", "acc/c")})
    return metrics


# --------------------------------------------------------------------------------------------- entry points


def _fail_switch(inputs: dict, key: str | None) -> None:
    fails = inputs.get("fail_cells") or []
    if "*" in fails or (key and any(key.startswith(f) for f in fails)):
        raise RuntimeError(f"fault injected by train.fail_cells for cell {key}")


def run_cell(inputs: dict, deps: dict[str, Path], out: Path, ctx: StageContext,
             use_cache: bool = True, key: str | None = None) -> dict[str, float]:
    """Distil (or run the baseline) and evaluate; writes the tail's state to `out/tail.pt`."""
    _fail_switch(inputs, key)
    cell = inputs["cell"]
    method = cell["method"]
    t0 = time.perf_counter()
    if method in ("full_ft", "wise_ft"):
        return _run_full(inputs, deps, out, ctx)
    bundles_meta = load_bundles(deps["eval"]) if "student" not in deps else None
    classes = (bundles_meta or {}).get("classes") or _classes_from(deps)
    student = student_from_deps(inputs, deps, classes, inputs["train"]["dropout"]).eval()
    use_cache = use_cache and "features" in deps
    orig_trunk = copy.deepcopy(student.trunk).eval()
    metrics: dict[str, float] = {}
    if method != "original":
        td = _TrainData(inputs, deps, student, use_cache)
        with Timer() as t:
            last = train_tail(inputs, student, td, ctx)
        metrics.update({"time/train_s": t.s, **{k: v for k, v in last.items()}})
        save({k: v for k, v in student.state_dict().items() if k.startswith(("trunk.", "heads."))}, out / "tail.pt")
    else:
        metrics["time/train_s"] = 0.0
    if ctx.rank == 0:
        metrics.update(evaluate_cell(inputs, deps, student, use_cache, orig_trunk))
        counts = student.param_counts()
        metrics.update({"params/tuned": float(counts["tuned"]), "params/total": float(counts["total"])})
    if "teacher" in deps:
        metrics.update({f"teacher/{k}": v for k, v in read_metrics(deps["teacher"]).items()
                        if k in ("acc/clean", "acc/c", "fp/mean", "acc/pool") or k.startswith("fp/")})
    metrics["time/cell_s"] = time.perf_counter() - t0
    return metrics


def _classes_from(deps: dict[str, Path]) -> list[str]:
    import json

    return json.loads((deps["student"] / "model.json").read_text())["classes"]


# --------------------------------------------------------------------------------------------- complete FT


def full_finetune(inputs: dict, deps: dict[str, Path], out: Path, ctx: StageContext) -> dict[str, float]:
    """Complete fine-tuning: every parameter of the student on clean ∪ augmented images (expensive baseline)."""
    tr, seed = inputs["train"], inputs["seed"]
    bundles = load_bundles(deps["eval"])
    student = student_from_deps(inputs, deps, bundles["classes"], tr["dropout"])
    pool = load_pool(deps["pool"])
    a = inputs["data_fraction"]
    ci = _fraction_indices(len(pool["train"]["y"]), a, seed)
    pi = _fraction_indices(len(pool["pool"]["y"]), a, seed)
    x = torch.cat([pool["train"]["x"][ci], pool["pool"]["x"][pi]])
    y = torch.cat([pool["train"]["y"][ci], pool["pool"]["y"][pi]])
    student.set_frozen_trainable(True)
    g = seed_everything(seed)
    optim = adam([p for n, p in student.named_parameters()
                  if p.requires_grad and not n.startswith(("original_tail.", "heads.clean", "heads.unclean"))],
                 tr["full_ft_lr"])

    def step(idx: Tensor, _step: int) -> tuple[Tensor, dict[str, Tensor]]:
        loss = F.cross_entropy(student(to_float(x[idx]), head="combined"), y[idx])
        return loss, {"loss": loss.detach()}

    with Timer() as t:
        run_epochs(student, optim, tr["full_ft_epochs"] or tr["epochs"],
                   lambda _: iterate_minibatches(len(x), tr["batch_size"], g), step, ctx)
        precise_bn(student, x, lambda z: student(z, head="combined"))
    student.set_frozen_trainable(False)
    student.eval()
    save(student.state_dict(), out / "model.pt")
    (out / "model.json").write_text((deps["student"] / "model.json").read_text() if "student" in deps else "{}")
    return {"time/train_s": t.s, "time/stage_s": t.s}


def _run_full(inputs: dict, deps: dict[str, Path], out: Path, ctx: StageContext) -> dict[str, float]:
    method, tr = inputs["cell"]["method"], inputs["train"]
    bundles = load_bundles(deps["eval"])
    base = student_from_deps(inputs, deps, bundles["classes"], tr["dropout"]).eval()
    tuned = copy.deepcopy(base)
    tuned.load_state_dict(load(deps["full_ft"] / "model.pt"))
    if method == "wise_ft":  # weight-space ensemble of the original and the fine-tuned model
        w = tr["wise_alpha"]
        sd0, sd1 = base.state_dict(), tuned.state_dict()
        tuned.load_state_dict({k: (1 - w) * sd0[k] + w * sd1[k] if sd0[k].is_floating_point() else sd1[k]
                               for k in sd0})
    tuned.eval()
    net = lambda x: tuned(x, head="combined")  # noqa: E731
    with torch.no_grad():
        metrics = evaluate_suites(classifier_predictor(net), bundles, inputs["eval"],
                                  embed=lambda x: tuned.trunk(tuned.encode(x)).flatten(1))
    ft = read_metrics(deps["full_ft"])
    counts = tuned.param_counts()
    metrics.update({"time/train_s": 0.0, "time/full_ft_s": ft.get("time/train_s", 0.0), "params/tuned": float(counts["total"]),
                    "params/total": float(counts["total"])})
    return metrics
