"""Stages that train a whole image classifier: the robust and the naive teacher, and the pretrained stand-in
student. All three run `trainables.train_loop` with a warm-up-cosine Adam, gradients clipped to norm 1."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainables import augment, outcomes
from trainables.artifacts import load_bundles, load_pool, write_model_json
from trainables.build import build_student, build_teacher, source_split
from trainables.common import (
    StageContext,
    Timer,
    accuracy,
    iterate_minibatches,
    load,
    precise_bn,
    read_metrics,
    save,
    seed_everything,
    to_float,
)
from trainables.evaluate import classifier_predictor, evaluate_suites
from trainables.kinds import PretrainInputs, TeacherInputs, body
from trainables.losses import augmix_loss
from trainables.reading import Reader, stage_reader
from trainables.shards import Picked
from trainables.train_loop import adam, run_epochs

LossFn = Callable[[nn.Module, Tensor, Tensor, int], tuple[Tensor, dict[str, Tensor]]]


def _train_classifier(
    net: nn.Module,
    x: Tensor | Picked,
    y: Tensor,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    ctx: StageContext,
    loss_fn: LossFn,
) -> None:
    g = seed_everything(seed)
    params = [p for p in net.parameters() if p.requires_grad]
    optim = adam(params, lr, total_steps=epochs * -(-len(x) // batch_size), clip=1.0)
    run_epochs(
        net,
        optim,
        epochs,
        lambda _: iterate_minibatches(len(x), batch_size, g),
        lambda idx, step: loss_fn(net, x[idx], y[idx], step),
        ctx,
    )


def _ce_step(net: Callable[[Tensor], Tensor], xb: Tensor, yb: Tensor, step: int) -> tuple[Tensor, dict]:
    loss = F.cross_entropy(net(to_float(xb)), yb)
    return loss, {"loss": loss.detach()}


def _augmix_step(seed: int, jsd_weight: float, severity: int, noise2net_share: float = 0.0) -> LossFn:
    """AugMix + JSD on (clean, aug1, aug2); with `noise2net_share`, that share of each (shuffled) batch first goes
    through its own fresh Noise2Net (augment.noise2net_online), drawn from the step's own seed."""

    def step_fn(net: nn.Module, xb: Tensor, yb: Tensor, step: int) -> tuple[Tensor, dict]:
        if noise2net_share > 0:
            xb = augment.noise2net_online(xb, torch.Generator().manual_seed(seed * 1_000_033 + step), noise2net_share)
        a1, a2 = augment.augmix_views(xb, seed=seed * 1_000_003 + step, severity=severity)
        logits = net(to_float(torch.cat([xb, a1, a2])))
        lc, l1, l2 = logits.chunk(3)
        loss, parts = augmix_loss(lc, l1, l2, yb, jsd_weight=jsd_weight)
        return loss, {"loss": loss.detach(), **{f"loss_{k}": v for k, v in parts.items()}}

    return step_fn


def _teacher_data(
    inputs: TeacherInputs, deps: dict[str, Path], g: torch.Generator, robust: bool, reader: Reader
) -> tuple[Picked, Tensor, dict]:
    """The teacher's training images (an index view) and labels, and the pool.

    Why the naive teacher trains on as many images as the robust one (clean images drawn again in place of the
    pool's): supplement Table 6 compares the two at the same budget, so they must take the same optimiser steps
    from the same start; only the data (clean vs clean + DeepAugment) and the loss (CE vs AugMix + JSD) differ.
    """
    tt = inputs.teacher_train
    train, _ = source_split(inputs.data, reader)
    n = tt["n_images"] or len(train)
    sel = torch.randperm(len(train), generator=g)[:n]
    y = train.labels[sel]
    pool = load_pool(deps["pool"])["pool"]
    n_pool = min(tt.get("pool_images") or len(pool["y"]), len(pool["y"]))
    psel = torch.randperm(len(pool["y"]), generator=g)[:n_pool]
    # images as index views (shards.Picked), gathered per batch: never a copy of the split
    if robust:  # AugMix + JSD on clean *and* the DeepAugment/Noise2Net images that build the pool (method.md §8)
        return Picked((train.images, sel), (pool["x"], psel)), torch.cat([y, pool["y"][psel]]), pool
    extra = torch.randint(len(sel), (n_pool,), generator=g)
    return Picked((train.images, torch.cat([sel, sel[extra]]))), torch.cat([y, y[extra]]), pool


def _load_init(net: nn.Module, deps: dict[str, Path]) -> None:
    """Start from the naive pretraining (`pretrain_teacher`) where the profile gives no pretrained weights: the
    paper robustifies *pretrained* teachers (DeepAugment's train.py fine-tunes an ImageNet model)."""
    if "init" in deps:
        net.load_state_dict(load(deps["init"] / "model.pt"))


def _teacher_stage(
    inputs: TeacherInputs, deps: dict[str, Path], out: Path, ctx: StageContext, robust: bool
) -> dict[str, float]:
    tt, seed, size = inputs.teacher_train, inputs.seed, inputs.data["image_size"]
    bundles = load_bundles(deps["eval"])
    classes = bundles["classes"]
    g = torch.Generator().manual_seed(seed)
    x, y, pool = _teacher_data(inputs, deps, g, robust, stage_reader(ctx))
    net = build_teacher(inputs.model, len(classes), size)
    _load_init(net, deps)
    step_fn = (
        _augmix_step(seed, tt["jsd_weight"], tt.get("augmix_severity", 1), tt.get("noise2net_share", 0.0))
        if robust
        else _ce_step
    )
    with Timer() as t:
        _train_classifier(net, x, y, tt["epochs"], tt["lr"], tt["batch_size"], seed, ctx, step_fn)
        precise_bn(net, x, net, seed=seed)
    net.eval()
    pred = outcomes.memo(classifier_predictor(net))  # one forward pass for the metrics and the outcomes file
    metrics = evaluate_suites(pred, bundles, ["clean", "c", "p"])
    outcomes.save(out / outcomes.OUTCOMES_FILE, outcomes.collect(pred, bundles, ["clean", "c", "p"]))
    metrics["acc/pool"] = accuracy(net, pool["x"], pool["y"])
    if "init" in deps:  # the regime check "trained to a plateau" reads the pretraining's last-epoch gain
        metrics.update({f"init/{k}": v for k, v in read_metrics(deps["init"]).items() if k.startswith("acc/")})
    metrics.update({"time/train_s": t.s, "time/stage_s": t.s})
    write_model_json(out, "teacher", dataclasses.replace(inputs.model, weights=None), len(classes), size, classes)
    save(net.state_dict(), out / "model.pt")
    return metrics


@body("robustify_teacher")
def robustify_teacher(inputs: TeacherInputs, deps: dict[str, Path], out: Path, ctx: StageContext) -> dict[str, float]:
    """The small teacher fine-tuned with AugMix (+ 12 x JSD) on clean + DeepAugment images (method.md §2.1)."""
    return _teacher_stage(inputs, deps, out, ctx, robust=True)


@body("naive_teacher")
def naive_teacher(inputs: TeacherInputs, deps: dict[str, Path], out: Path, ctx: StageContext) -> dict[str, float]:
    """The same teacher fine-tuned on clean data only, same start and steps: Table 6's "naive" column and the
    flip-rate reference model."""
    return _teacher_stage(inputs, deps, out, ctx, robust=False)


@body("pretrain_teacher")
def pretrain_teacher(inputs: PretrainInputs, deps: dict[str, Path], out: Path, ctx: StageContext) -> dict[str, float]:
    """Local stand-in for a teacher's ImageNet weights: CE on the whole clean split, to a plateau (its per-epoch
    clean accuracy is logged; `acc/clean_gain_last` is the last epoch's gain, the regime check's input)."""
    d, p = inputs.data, inputs.pretrain
    train, test = source_split(d, stage_reader(ctx))
    net = build_teacher(inputs.model, len(train.classes), d["image_size"])
    n = p["n_images"] or len(train)
    with Timer() as t:
        curve = _train_to_plateau(net, train.images[:n], train.labels[:n], p, ctx, net, test)
    save(net.state_dict(), out / "model.pt")
    return {**curve, "time/train_s": t.s, "time/stage_s": t.s}


def _train_to_plateau(
    net: nn.Module, x: Tensor, y: Tensor, p: dict, ctx: StageContext, predict: Callable, test
) -> dict[str, float]:
    """CE for `p['epochs']`; after each of the last two epochs, precise BN and the clean test accuracy (BN
    running statistics are only read in eval mode, so recomputing them does not change the training; the last
    recomputation is the model's final statistics).

    Returns:
        acc/clean (final), acc/clean_prev (one epoch before) and acc/clean_gain_last (their difference): what
        "trained to a plateau" is checked on.
    """
    curve: list[float] = []

    def after_epoch(epoch: int) -> None:
        if epoch >= p["epochs"] - 2:  # the last two epochs are what the plateau check compares
            precise_bn(net, x, predict)
            net.eval()
            curve.append(accuracy(predict, test.images, test.labels))
            ctx.log({"acc/clean_epoch": curve[-1]}, step=epoch)

    g = seed_everything(0)
    steps = p["epochs"] * -(-len(x) // p["batch_size"])
    optim = adam([q for q in net.parameters() if q.requires_grad], p["lr"], total_steps=steps, clip=1.0)
    step = lambda idx, s: _ce_step(predict, x[idx], y[idx], s)  # noqa: E731
    batches = lambda _: iterate_minibatches(len(x), p["batch_size"], g)  # noqa: E731
    run_epochs(net, optim, p["epochs"], batches, step, ctx, after_epoch=after_epoch)
    prev = curve[-2] if len(curve) > 1 else 0.0
    return {"acc/clean": curve[-1], "acc/clean_prev": prev, "acc/clean_gain_last": curve[-1] - prev}


@body("pretrain_student")
def pretrain_student(inputs: PretrainInputs, deps: dict[str, Path], out: Path, ctx: StageContext) -> dict[str, float]:
    """Local stand-in for pretrained weights: the whole student trained on clean data only, so it is accurate on
    clean images and brittle under corruptions, like the paper's pretrained students. CLIP students learn through
    their class-prompt text embeddings, so their zero-shot classifier means something afterwards."""
    d, p = inputs.data, inputs.pretrain
    train, test = source_split(d, stage_reader(ctx))
    classes = list(train.classes)
    s = build_student(inputs.model, len(classes), d["image_size"], classes, inputs.dropout)
    n = p["n_images"] or len(train)
    x, y = train.images[:n], train.labels[:n]
    s.set_frozen_trainable(True)
    with Timer() as t:
        curve = _train_to_plateau(s, x, y, p, ctx, lambda z: s(z, head="clean"), test)
    s.set_frozen_trainable(False)
    s.eval()
    for h in ("unclean", "combined"):  # every head starts from the same (pre)trained weights
        s.heads[h].load_state_dict(s.heads["clean"].state_dict())
    s.snapshot_original()
    write_model_json(
        out,
        "student",
        dataclasses.replace(inputs.model, weights=None),
        len(classes),
        d["image_size"],
        classes,
        inputs.dropout,
    )
    save(s.state_dict(), out / "model.pt")
    return {**curve, "time/train_s": t.s, "time/stage_s": t.s}
