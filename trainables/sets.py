"""The image sets every later stage reads: the eval sets (`build_eval_sets`) and the augmented pool (`build_pool`).

Both are plain tensors of uint8 images written once per seed; nothing here trains a classifier.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainables import augment, data, imagenet, reading, shifts
from trainables.build import SPLIT_SEED, source_split
from trainables.common import StageContext, Timer, save
from trainables.kinds import EvalSetsInputs, PoolInputs, body
from trainables.reading import stage_reader


@body("build_eval_sets")
def build_eval_sets(inputs: EvalSetsInputs, deps: dict[str, Path], out: Path, ctx: StageContext) -> dict[str, float]:
    """Clean test split, C (15 x 5), P sequences, the transfer split(s) and, on imagenet, the shift sets.
    Embedded: C and P are generated once per seed from the test split. ImageNet: all are read from their roots."""
    d, seed, suites = inputs.data, inputs.seed, inputs.suites
    with Timer() as t:
        imagenet_source = d["source"] == "imagenet"
        reader = stage_reader(ctx)
        test = imagenet.imagenet_val(d, SPLIT_SEED, reader) if imagenet_source else source_split(d)[1]
        bundles: dict[str, Any] = {"clean": {"x": test.images, "y": test.labels}, "classes": list(test.classes)}
        if imagenet_source:
            bundles.update(_imagenet_eval_bundles(d, suites, list(test.classes), seed, reader))
        else:
            bundles.update(_embedded_eval_bundles(d, suites, test, seed))
        save(bundles, out / "eval.pt")
    return {"time/stage_s": t.s}


def _embedded_eval_bundles(d: dict, suites: list[str], test: data.ImageSet, seed: int) -> dict[str, Any]:
    bundles: dict[str, Any] = {}
    if "c" in suites:
        cs = shifts.build_c_set(test, seed=seed, n_per_cell=d["c_per_cell"], n_distinct=d.get("c_distinct"))
        bundles["c"] = {"x": cs.images, "y": cs.labels, "corruptions": list(cs.corruptions), "source": cs.sources}
    if "p" in suites:
        ps = shifts.build_p_set(test, seed=seed, n_sequences=d["p_sequences"], n_frames=d["p_frames"])
        bundles["p"] = {"x": ps.images, "y": ps.labels, "perturbations": list(ps.perturbations)}
    if "transfer" in suites:
        tr, te = data.load_digits_transfer(seed=SPLIT_SEED, size=d["image_size"])
        bundles["transfer"] = {
            "train_x": tr.images,
            "train_y": tr.labels,
            "test_x": te.images,
            "test_y": te.labels,
            "name": "digits",
        }
    return bundles


def _imagenet_eval_bundles(
    d: dict, suites: list[str], wnids: list[str], seed: int, reader: reading.Reader
) -> dict[str, Any]:
    """ImageNet-C / -P read from disk (not generated), the shift sets, and `transfer/<name>` per transfer root."""
    bundles: dict[str, Any] = {}
    if "c" in suites:
        bundles["c"] = imagenet.imagenet_c_bundle(d, wnids, seed, reader)
    if "p" in suites:
        bundles["p"] = imagenet.imagenet_p_bundle(d, wnids, seed, reader)
    bundles.update(imagenet.shift_bundles(d, suites, wnids, seed, reader))
    if "transfer" in suites:
        bundles.update(imagenet.transfer_bundles(d, SPLIT_SEED, reader))
    return bundles


@body("build_pool")
def build_pool(inputs: PoolInputs, deps: dict[str, Path], out: Path, ctx: StageContext) -> dict[str, float]:
    """DeepAugment autoencoder (reconstruction checked) + Noise2Net + AugMix: the offline pool of N' images."""
    d, p, seed = inputs.data, inputs.pool, inputs.seed
    with Timer() as t:
        train, _ = source_split(d, stage_reader(ctx))
        ae, report = augment.train_autoencoder(train.images, epochs=p["ae_epochs"], seed=seed)
        cfg = augment.PoolConfig(
            n_images=p["n_images"],
            augmix_prob=p["augmix_prob"],
            noise2net_share=p["noise2net_share"],
            augmix_severity=p.get("augmix_severity", 1),
        )
        pool = augment.build_pool(train, ae, seed=seed, cfg=cfg)
        save(
            {
                "train": {"x": train.images, "y": train.labels},
                "pool": {"x": pool.images, "y": pool.labels},
                "classes": list(train.classes),
            },
            out / "pool.pt",
        )
    return {
        "time/stage_s": t.s,
        "ae/recon_mse": float(report["recon_mse"]),
        "ae/mean_image_mse": float(report["mean_image_mse"]),
        "pool/n_images": float(len(pool)),
    }
