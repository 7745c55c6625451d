"""One function per stage of the DAG (orchestrator/plan.py). Each is a plain-PyTorch loop body.

Signature of every stage: `fn(inputs, deps, out, ctx) -> metrics`, where `inputs` is the stage's resolved config
(exactly what its cache key hashes), `deps` maps roles (`pool`, `eval`, `student`, `teacher`, `targets`,
`features`, `reference`, `full_ft`) to the folders of upstream cache entries, `out` is an empty folder the stage
fills, and the returned metrics are also written to `out/metrics.json`. Nothing here knows about Ray or MLflow.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainables import augment, data, shifts
from trainables.common import (StageContext, Timer, accuracy, apply_chunked, iterate_minibatches, load, precise_bn,
                               save, seed_everything, to_float, write_metrics)
from trainables.evaluate import classifier_predictor, evaluate_suites
from trainables.losses import augmix_loss
from trainables.models import create_student, create_teacher, load_state_dict_file
from trainables.train_loop import adam, run_epochs

SPLIT_SEED = 0  # one fixed train/test split for every seed: a pretrained student must never have seen a test image

# --------------------------------------------------------------------------------------------- data helpers


def source_split(d: dict[str, Any]) -> tuple["data.ImageSet", "data.ImageSet"]:
    """The clean (train, test) split of `data.source`: MNIST-5k (embedded) or ImageNet train/val folders
    (imagenet, bounded by n_train / n_test: see trainables/imagenet.py). Always the fixed SPLIT_SEED."""
    if d["source"] == "imagenet":
        from trainables import imagenet

        return imagenet.imagenet_split(d, seed=SPLIT_SEED)
    if d["source"] != "embedded":
        raise ValueError(f"data.source {d['source']!r} is not known; allowed: embedded, imagenet")
    return data.load_mnist5k(seed=SPLIT_SEED, n_train=d["n_train"], n_test=d["n_test"], size=d["image_size"])


def load_bundles(folder: Path) -> dict[str, Any]:
    return load(folder / "eval.pt")


def load_pool(folder: Path) -> dict[str, Any]:
    return load(folder / "pool.pt")


def _model_json(out: Path, role: str, model: dict, num_classes: int, img_size: int, classes: list[str],
                dropout: float | None = None) -> None:
    spec = {"role": role, "model": model, "num_classes": num_classes, "img_size": img_size, "classes": classes}
    if dropout is not None:
        spec["dropout"] = dropout
    (out / "model.json").write_text(json.dumps(spec, sort_keys=True))


def build_teacher(model: dict, num_classes: int, img_size: int) -> nn.Module:
    w = model.get("weights")
    pretrained = w if w and not Path(w).exists() else None
    net = create_teacher(model["name"], num_classes=num_classes, img_size=img_size, pretrained=pretrained,
                         **model.get("overrides", {}))
    if w and Path(w).exists():
        load_state_dict_file(net, w)
    return net


def build_student(model: dict, num_classes: int, img_size: int, classes: list[str], dropout: float) -> nn.Module:
    w = model.get("weights")
    pretrained = w if w and not Path(w).exists() else None
    s = create_student(model["name"], num_classes=num_classes, img_size=img_size, class_names=classes,
                       dropout=dropout, pretrained=pretrained, **model.get("overrides", {}))
    if w and Path(w).exists():
        load_state_dict_file(s, w)
        s.snapshot_original()
    return s


def load_model_folder(folder: Path) -> nn.Module:
    """Rebuild a teacher/student saved by a stage (model.json + model.pt)."""
    spec = json.loads((folder / "model.json").read_text())
    if spec["role"] == "teacher":
        net = build_teacher({**spec["model"], "weights": None}, spec["num_classes"], spec["img_size"])
    else:
        net = build_student({**spec["model"], "weights": None}, spec["num_classes"], spec["img_size"],
                            spec["classes"], spec["dropout"])
    net.load_state_dict(load(folder / "model.pt"))
    return net


def student_from_deps(inputs: dict, deps: dict[str, Path], classes: list[str], dropout: float) -> nn.Module:
    if "student" in deps:  # pretrain_student output
        return load_model_folder(deps["student"])
    d = inputs["data"]
    return build_student(inputs["model"], len(classes), d["image_size"], classes, dropout)


# --------------------------------------------------------------------------------------------- eval sets & pool


def build_eval_sets(inputs: dict, deps: dict[str, Path], out: Path, ctx: StageContext) -> dict[str, float]:
    """Clean test split, C (15 x 5), P sequences, the transfer split(s) and, on imagenet, the shift sets.
    Embedded: C and P are generated once per seed from the test split. ImageNet: all are read from their roots."""
    d, seed, suites = inputs["data"], inputs["seed"], inputs["suites"]
    with Timer() as t:
        _, test = source_split(d)
        bundles: dict[str, Any] = {"clean": {"x": test.images, "y": test.labels}, "classes": list(test.classes)}
        if d["source"] == "imagenet":
            bundles.update(_imagenet_eval_bundles(d, suites, list(test.classes), seed))
        else:
            bundles.update(_embedded_eval_bundles(d, suites, test, seed))
        save(bundles, out / "eval.pt")
    return {"time/stage_s": t.s}


def _embedded_eval_bundles(d: dict, suites: list[str], test: "data.ImageSet", seed: int) -> dict[str, Any]:
    bundles: dict[str, Any] = {}
    if "c" in suites:
        cs = shifts.build_c_set(test, seed=seed, n_per_cell=d["c_per_cell"])
        bundles["c"] = {"x": cs.images, "y": cs.labels, "corruptions": list(cs.corruptions)}
    if "p" in suites:
        ps = shifts.build_p_set(test, seed=seed, n_sequences=d["p_sequences"], n_frames=d["p_frames"])
        bundles["p"] = {"x": ps.images, "y": ps.labels, "perturbations": list(ps.perturbations)}
    if "transfer" in suites:
        tr, te = data.load_digits_transfer(seed=SPLIT_SEED, size=d["image_size"])
        bundles["transfer"] = {"train_x": tr.images, "train_y": tr.labels, "test_x": te.images,
                               "test_y": te.labels, "name": "digits"}
    return bundles


def _imagenet_eval_bundles(d: dict, suites: list[str], wnids: list[str], seed: int) -> dict[str, Any]:
    """ImageNet-C / -P read from disk (not generated), the shift sets, and `transfer/<name>` per transfer root."""
    from trainables import imagenet

    bundles: dict[str, Any] = {}
    if "c" in suites:
        bundles["c"] = imagenet.imagenet_c_bundle(d, wnids, seed)
    if "p" in suites:
        bundles["p"] = imagenet.imagenet_p_bundle(d, wnids, seed)
    bundles.update(imagenet.shift_bundles(d, suites, wnids, seed))
    if "transfer" in suites:
        bundles.update(imagenet.transfer_bundles(d, SPLIT_SEED))
    return bundles


def build_pool(inputs: dict, deps: dict[str, Path], out: Path, ctx: StageContext) -> dict[str, float]:
    """DeepAugment autoencoder (reconstruction checked) + Noise2Net + AugMix: the offline pool of N' images."""
    d, p, seed = inputs["data"], inputs["pool"], inputs["seed"]
    with Timer() as t:
        train, _ = source_split(d)
        ae, report = augment.train_autoencoder(train.images, epochs=p["ae_epochs"], seed=seed)
        cfg = augment.PoolConfig(n_images=p["n_images"], augmix_prob=p["augmix_prob"],
                                 noise2net_share=p["noise2net_share"])
        pool = augment.build_pool(train, ae, seed=seed, cfg=cfg)
        save({"train": {"x": train.images, "y": train.labels}, "pool": {"x": pool.images, "y": pool.labels},
              "classes": list(train.classes)}, out / "pool.pt")
    return {"time/stage_s": t.s, "ae/recon_mse": float(report["recon_mse"]),
            "ae/mean_image_mse": float(report["mean_image_mse"]), "pool/n_images": float(len(pool))}


# --------------------------------------------------------------------------------------------- classifiers


def _train_classifier(net: nn.Module, x: Tensor, y: Tensor, epochs: int, lr: float, batch_size: int,
                      seed: int, ctx: StageContext, loss_fn: Callable[[nn.Module, Tensor, Tensor, int], tuple]) -> None:
    g = seed_everything(seed)
    params = [p for p in net.parameters() if p.requires_grad]
    optim = adam(params, lr, total_steps=epochs * -(-len(x) // batch_size), clip=1.0)
    run_epochs(net, optim, epochs, lambda _: iterate_minibatches(len(x), batch_size, g),
               lambda idx, step: loss_fn(net, x[idx], y[idx], step), ctx)


def _ce_step(net: nn.Module, xb: Tensor, yb: Tensor, step: int) -> tuple[Tensor, dict]:
    loss = F.cross_entropy(net(to_float(xb)), yb)
    return loss, {"loss": loss.detach()}


def _augmix_step(seed: int, jsd_weight: float):
    def step_fn(net: nn.Module, xb: Tensor, yb: Tensor, step: int) -> tuple[Tensor, dict]:
        a1, a2 = augment.augmix_views(xb, seed=seed * 1_000_003 + step)
        logits = net(to_float(torch.cat([xb, a1, a2])))
        lc, l1, l2 = logits.chunk(3)
        loss, parts = augmix_loss(lc, l1, l2, yb, jsd_weight=jsd_weight)
        return loss, {"loss": loss.detach(), **{f"loss_{k}": v for k, v in parts.items()}}
    return step_fn


def _teacher_stage(inputs: dict, deps: dict[str, Path], out: Path, ctx: StageContext, robust: bool) -> dict:
    d, tt, seed = inputs["data"], inputs["teacher_train"], inputs["seed"]
    bundles = load_bundles(deps["eval"])
    classes = bundles["classes"]
    train, _ = source_split(d)
    n = tt["n_images"] or len(train)
    g = torch.Generator().manual_seed(seed)
    sel = torch.randperm(len(train), generator=g)[:n]
    x, y = train.images[sel], train.labels[sel]
    pool = None
    if robust:  # AugMix + JSD on clean *and* the DeepAugment/Noise2Net images that build the pool (method.md §8)
        pool = load_pool(deps["pool"])["pool"]
        psel = torch.randperm(len(pool["y"]), generator=g)[: tt.get("pool_images") or len(pool["y"])]
        x, y = torch.cat([x, pool["x"][psel]]), torch.cat([y, pool["y"][psel]])
    net = build_teacher(inputs["model"], len(classes), d["image_size"])
    step_fn = _augmix_step(seed, tt["jsd_weight"]) if robust else _ce_step
    with Timer() as t:
        _train_classifier(net, x, y, tt["epochs"], tt["lr"], tt["batch_size"], seed, ctx, step_fn)
        precise_bn(net, x[torch.randperm(len(x), generator=g)], net)
    net.eval()
    metrics = evaluate_suites(classifier_predictor(net), bundles, ["clean", "c", "p"])
    if pool is not None:
        metrics["acc/pool"] = accuracy(net, pool["x"], pool["y"])
    metrics.update({"time/train_s": t.s, "time/stage_s": t.s})
    _model_json(out, "teacher", {**inputs["model"], "weights": None}, len(classes), d["image_size"], classes)
    save(net.state_dict(), out / "model.pt")
    return metrics


def robustify_teacher(inputs: dict, deps: dict[str, Path], out: Path, ctx: StageContext) -> dict[str, float]:
    """The small teacher trained with AugMix (+ 12 x JSD) on clean + DeepAugment images (method.md §2.1)."""
    return _teacher_stage(inputs, deps, out, ctx, robust=True)


def naive_teacher(inputs: dict, deps: dict[str, Path], out: Path, ctx: StageContext) -> dict[str, float]:
    """The same teacher on clean data only: Table 6's "naive" column and the flip-rate reference model."""
    return _teacher_stage(inputs, deps, out, ctx, robust=False)


def pretrain_student(inputs: dict, deps: dict[str, Path], out: Path, ctx: StageContext) -> dict[str, float]:
    """Local stand-in for pretrained weights: the whole student trained on clean data only, so it is accurate on
    clean images and brittle under corruptions, like the paper's pretrained students. CLIP students learn through
    their class-prompt text embeddings, so their zero-shot classifier means something afterwards."""
    d, p = inputs["data"], inputs["pretrain"]
    train, test = source_split(d)
    classes = list(train.classes)
    s = build_student(inputs["model"], len(classes), d["image_size"], classes, inputs["dropout"])
    n = p["n_images"] or len(train)
    x, y = train.images[:n], train.labels[:n]
    s.set_frozen_trainable(True)
    clean = lambda net, xb, yb, step: _ce_step(lambda z: net(z, head="clean"), xb, yb, step)  # noqa: E731
    with Timer() as t:
        _train_classifier(s, x, y, p["epochs"], p["lr"], p["batch_size"], 0, ctx, clean)
        precise_bn(s, x, lambda z: s(z, head="clean"))
    s.set_frozen_trainable(False)
    s.eval()
    for h in ("unclean", "combined"):  # every head starts from the same (pre)trained weights
        s.heads[h].load_state_dict(s.heads["clean"].state_dict())
    s.snapshot_original()
    acc = accuracy(lambda z: s(z, head="clean"), test.images, test.labels)
    _model_json(out, "student", {**inputs["model"], "weights": None}, len(classes), d["image_size"], classes,
                inputs["dropout"])
    save(s.state_dict(), out / "model.pt")
    return {"acc/clean": acc, "time/train_s": t.s, "time/stage_s": t.s}


# --------------------------------------------------------------------------------------------- features & targets


def encode_bundles(fn: Callable[[Tensor], Tensor], bundles: dict[str, Any]) -> dict[str, Any]:
    """The same bundle structure with every image tensor replaced by fn(images)."""
    out: dict[str, Any] = {}
    for name, b in bundles.items():
        if not isinstance(b, dict):
            out[name] = b
            continue
        out[name] = {k: (apply_chunked(fn, v, item_dims=3) if torch.is_tensor(v) and v.dtype == torch.uint8 else v) for k, v in b.items()}
    return out


def extract_features(inputs: dict, deps: dict[str, Path], out: Path, ctx: StageContext) -> dict[str, float]:
    """Run the frozen part of the student ONCE over the clean split, the pool and every eval set."""
    bundles = load_bundles(deps["eval"])
    pool = load_pool(deps["pool"])
    s = student_from_deps(inputs, deps, bundles["classes"], inputs["dropout"]).eval()
    with Timer() as t:
        feats = {"train": encode_bundles(s.encode, {"t": pool["train"]})["t"],
                 "pool": encode_bundles(s.encode, {"p": pool["pool"]})["p"],
                 "eval": encode_bundles(s.encode, bundles)}
    save(feats, out / "features.pt")
    return {"time/stage_s": t.s, "features/dim": float(feats["train"]["x"][0].numel())}


def teacher_targets(inputs: dict, deps: dict[str, Path], out: Path, ctx: StageContext) -> dict[str, float]:
    """The robust teacher's logits on the clean split and the pool, once per (teacher, pool)."""
    net = load_model_folder(deps["teacher"]).eval()
    pool = load_pool(deps["pool"])
    with Timer() as t:
        targets = {"train": apply_chunked(net, pool["train"]["x"], item_dims=3),
                   "pool": apply_chunked(net, pool["pool"]["x"], item_dims=3)}
    save(targets, out / "targets.pt")
    return {"time/stage_s": t.s}


STAGES: dict[str, Callable[[dict, dict, Path, StageContext], dict[str, float]]] = {
    "build_eval_sets": build_eval_sets,
    "build_pool": build_pool,
    "pretrain_student": pretrain_student,
    "naive_teacher": naive_teacher,
    "robustify_teacher": robustify_teacher,
    "extract_features": extract_features,
    "teacher_targets": teacher_targets,
}


def run_stage(kind: str, inputs: dict, deps: dict[str, Path], out: Path, ctx: StageContext) -> dict[str, float]:
    """Run one stage into `out` and write its metrics.json."""
    if ctx.threads:
        torch.set_num_threads(int(ctx.threads))
    if kind in ("cell", "full_finetune"):
        from trainables import distill

        fn = distill.run_cell if kind == "cell" else distill.full_finetune
    else:
        fn = STAGES[kind]
    start = time.time()
    metrics = fn(inputs, deps, out, ctx)
    metrics.update({"time/start_unix": start, "time/end_unix": time.time()})  # for the overhead benchmark
    write_metrics(out, metrics)
    return metrics
