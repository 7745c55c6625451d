"""The paper data path (`data.source: imagenet`) on tiny ImageNet-family folders written here with PIL: the split,
every eval bundle, logit masking for the class-subset sets, the one-line errors, and a stage chain that runs
through it (no Ray, no MLflow, no network)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from orchestrator.plan import build_plan
from orchestrator.spec import load_spec
from tests.procs import run_in_child
from trainables import data, imagenet, shifts
from trainables.artifacts import load_model_folder
from trainables.build import source_split
from trainables.cell_eval import rules_predictor
from trainables.common import NullReporter, StageContext, load
from trainables.distill import run_cell
from trainables.evaluate import classifier_predictor, evaluate_suites
from trainables.pipeline import run_stage

ROOT = Path(__file__).resolve().parents[1]
WNIDS = ["n01440764", "n01443537", "n01484850"]  # tench, goldfish, great white shark: sorted = label order
ALL_SUITES = ["clean", "c", "p", "transfer", "v2", "r", "a", "sketch", "objectnet", "objectnet_c"]


def _img(path: Path, colour: int, k: int, size: int = 16) -> None:
    """A small image whose mean colour encodes the class (so a tiny model can learn it) plus a per-file mark."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.zeros((size, size, 3), dtype=np.uint8)
    a[..., colour % 3] = 200
    a[k % size, :, :] = 40 * (k % 6)
    Image.fromarray(a).save(path)


def _write_tree(root: Path, p_as_mp4: bool = False) -> dict[str, str]:
    """ImageNet, -C (15 x 5), -P (10 perturbations, frame folders), -V2, -R (2 classes), -A, Sketch, ObjectNet
    (+ mapping JSON), Tiny-ImageNet and Flowers-102 in their published layouts; returns data.roots."""
    for c, w in enumerate(WNIDS):
        for k in range(4):
            _img(root / "imagenet" / "train" / w / f"{w}_{k}.JPEG", c, k)
        for k in range(2):
            _img(root / "imagenet" / "val" / w / f"ILSVRC2012_val_{c}{k}.JPEG", c, k + 7)
            _img(root / "imagenet_v2" / str(c) / f"v2_{k}.jpeg", c, k)
            _img(root / "imagenet_sketch" / "sketch" / w / f"s{k}.JPEG", c, k)
            _img(root / "tiny_imagenet" / "train" / w / "images" / f"{w}_{k}.JPEG", c, k)
            _img(root / "tiny_imagenet" / "val" / w / f"val_{k}.JPEG", c, k + 1)
        for corruption in shifts.CORRUPTIONS:
            for sev in shifts.SEVERITIES:
                _img(root / "imagenet_c" / corruption / str(sev) / w / f"ILSVRC2012_val_{c}0.JPEG", c, sev)
    for c, w in ((1, WNIDS[1]), (2, WNIDS[2])):  # R and A cover a subset of the classes
        for k in range(2):
            _img(root / "imagenet_r" / w / f"r{k}.jpg", c, k)
            _img(root / "imagenet_a" / w / f"a{k}.jpg", c, k)
    for pert in shifts.TEST_PERTURBATIONS:
        for s, w in enumerate(WNIDS[:2]):
            for j in range(1, 4):
                _img(root / "imagenet_p" / pert / w / f"seq{s}" / f"{j}.png", s, j)
    for cls, colour in (("daisy", 0), ("rose", 1)):
        for k in range(3):
            _img(root / "flowers102" / "train" / cls / f"{k}.jpg", colour, k)
            _img(root / "flowers102" / "test" / cls / f"{k}.jpg", colour, k + 3)
    for folder, colour in (("fish_tank_fish", 1), ("shark_like", 2)):
        for k in range(2):
            _img(root / "objectnet" / "images" / folder / f"{k}.png", colour, k)
    mapping = root / "objectnet_to_wnids.json"
    mapping.write_text(
        json.dumps({"fish_tank_fish": [WNIDS[1]], "shark_like": [WNIDS[2], WNIDS[0]], "not_on_disk": [WNIDS[0]]})
    )
    names = [
        "imagenet",
        "imagenet_c",
        "imagenet_p",
        "imagenet_v2",
        "imagenet_r",
        "imagenet_a",
        "imagenet_sketch",
        "objectnet",
        "tiny_imagenet",
        "flowers102",
    ]
    return {**{n: str(root / n) for n in names}, "objectnet_mapping": str(mapping)}


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, str]:
    return _write_tree(tmp_path_factory.mktemp("paper_data"))


def _spec(roots: dict[str, str], extra: tuple[str, ...] = ()):
    """The smoke sweep switched to the imagenet source on the tiny folders, every suite requested."""
    sets = [
        "data.source=imagenet",
        f"data.roots={json.dumps(roots)}",
        "data.n_train=null",
        "data.n_test=null",
        "data.c_per_cell=2",
        "data.p_sequences=2",
        "data.p_frames=3",
        f"eval=[{', '.join(ALL_SUITES)}]",
        "pool.n_images=12",
        "pool.ae_epochs=1",
        "teacher_train.n_images=12",
        "teacher_train.batch_size=6",
        "train.epochs=1",
        "train.batch_size=6",
        "train.mc_samples=2",
        "pretrain.n_images=12",
        "pretrain.batch_size=6",
        *extra,
    ]
    return load_spec(ROOT / "sweeps" / "smoke.yaml", "local", sets)


def _stage(plan, kind: str):
    return next(s for s in plan.stages.values() if s.kind == kind)


def _upstream(plan, stage) -> list[str]:
    """`stage`'s key after every key it depends on (a topological order of its upstream stages)."""
    keys: list[str] = []
    for k in stage.deps.values():
        keys += [u for u in _upstream(plan, plan.stages[k]) if u not in keys]
    return keys + [stage.key]


def _ctx() -> StageContext:
    return StageContext(reporter=NullReporter(), threads=1)  # 1: the CI box has 2 shared cores


@pytest.fixture(scope="module")
def eval_sets(roots, tmp_path_factory):
    plan = build_plan(_spec(roots))
    stage = _stage(plan, "build_eval_sets")
    out = tmp_path_factory.mktemp("eval")
    run_stage("build_eval_sets", stage.inputs, {}, out, _ctx())
    return load(out / "eval.pt"), stage.inputs


def test_split_reads_train_and_val_in_wnid_order(roots) -> None:
    d = {"source": "imagenet", "roots": roots, "image_size": 32, "n_train": None, "n_test": None}
    train, test = source_split(d)
    assert train.classes == WNIDS and test.classes == WNIDS
    assert train.images.shape == (12, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4 and test.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert int(train.images[0, 0].float().mean()) > 100  # class 0 is red: the pixels are the files' own
    small, _ = source_split({**d, "n_train": 5, "n_test": 4})
    again, _ = source_split({**d, "n_train": 5, "n_test": 4})
    assert len(small) == 5 and torch.equal(small.images, again.images) and torch.equal(small.labels, again.labels)


def test_eval_bundles_have_the_embedded_structure(eval_sets) -> None:
    b, _ = eval_sets
    assert b["classes"] == WNIDS and b["clean"]["x"].shape == (6, 3, 32, 32)
    c = b["c"]
    assert c["x"].shape == (15, 5, 2, 3, 32, 32) and c["x"].dtype == torch.uint8
    assert c["corruptions"] == list(shifts.CORRUPTIONS) and len(c["y"]) == 2
    p = b["p"]
    assert p["x"].shape == (10, 2, 3, 3, 32, 32) and p["perturbations"] == list(shifts.TEST_PERTURBATIONS)
    assert p["y"].tolist() == [0, 1]
    assert (p["x"][:, :, 1:].float() - p["x"][:, :, :-1].float()).abs().sum() > 0  # frames in numeric order differ
    assert b["v2"]["y"].tolist() == [0, 0, 1, 1, 2, 2]
    assert b["r"]["class_subset"].tolist() == [1, 2] and b["r"]["y"].tolist() == [1, 1, 2, 2]
    assert b["a"]["class_subset"].tolist() == [1, 2] and "class_subset" not in b["sketch"]
    on = b["objectnet"]
    assert on["y"].tolist() == [1, 1, 2, 2]  # the first mapped wnid of each ObjectNet class
    assert on["class_subset"].tolist() == [0, 1, 2] and on["class_target"].tolist() == [2, 1, 2]
    assert b["objectnet_c"]["x"].shape[:3] == (15, 5, 2) and b["objectnet_c"]["class_subset"].tolist() == [0, 1, 2]
    tiny, flowers = b["transfer/tiny_imagenet"], b["transfer/flowers102"]
    assert tiny["train_x"].shape == (6, 3, 32, 32) and tiny["test_y"].tolist() == [0, 0, 1, 1, 2, 2]
    assert flowers["name"] == "flowers102" and flowers["train_y"].tolist() == [0, 0, 0, 1, 1, 1]


def test_c_subsample_is_seeded_and_shared_by_all_cells(roots) -> None:
    d = {"roots": roots, "image_size": 32, "c_per_cell": 2}
    a = imagenet.imagenet_c_bundle(d, WNIDS, seed=0)
    assert torch.equal(a["x"], imagenet.imagenet_c_bundle(d, WNIDS, seed=0)["x"])
    seeds = {tuple(imagenet.imagenet_c_bundle(d, WNIDS, seed=s)["y"].tolist()) for s in range(6)}
    assert len(seeds) > 1  # another seed draws another subset


class _Fixed(nn.Module):
    """A 'model' whose logits always prefer class 0, then 1, then 2 (input ignored)."""

    def forward(self, x):
        return torch.tensor([[3.0, 2.0, 1.0]]).expand(len(x), -1)


def test_class_subset_masks_the_logits(eval_sets) -> None:
    b, _ = eval_sets
    m = evaluate_suites(classifier_predictor(_Fixed()), b, ["clean", "r", "a", "v2", "objectnet", "objectnet_c"])
    assert m["acc/clean"] == pytest.approx(1 / 3) and m["acc/v2"] == pytest.approx(1 / 3)
    assert m["acc/r"] == pytest.approx(0.5) and m["acc/a"] == pytest.approx(0.5)  # class 0 is not in R: 1 wins
    # ObjectNet: class 0 (tench) is mapped to the 'shark_like' class whose label is 2
    assert m["acc/objectnet"] == pytest.approx(0.5)
    assert m["acc/objectnet_c"] == pytest.approx(float((b["objectnet_c"]["y"] == 2).float().mean()))
    assert "acc/objectnet_c/fog/3" in m


def test_rules_predictor_masks_every_head(eval_sets) -> None:
    from types import SimpleNamespace

    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.drop = nn.Dropout(0.25)

        def forward(self, z):
            return self.drop(torch.tensor([[9.0, 2.0, 1.0]]).expand(len(z), -1))

    student = SimpleNamespace(
        trunk=nn.Identity(), heads=nn.ModuleDict({h: Head() for h in ("clean", "unclean", "combined")})
    )
    b, _ = eval_sets
    m = evaluate_suites(rules_predictor(student, n=2, lam=1.0), {"r": b["r"]}, ["r"])
    assert m["acc/r"] == pytest.approx(0.5) and m["acc/head_clean/r"] == pytest.approx(0.5)
    assert m["acc/wo_kld/r"] == pytest.approx(0.5) and "f_correct/ours/r" in m


def test_missing_corruption_folder_is_one_clear_line(roots, tmp_path) -> None:
    c = tmp_path / "imagenet_c"
    shutil.copytree(roots["imagenet_c"], c)
    shutil.rmtree(c / "jpeg_compression" / "5")
    with pytest.raises(imagenet.PaperDataError, match=r"has no folder jpeg_compression/5; needs all 15"):
        imagenet.imagenet_c_bundle({"roots": {"imagenet_c": str(c)}, "image_size": 32, "c_per_cell": 2}, WNIDS, 0)
    (c / "fog" / "2" / WNIDS[0] / "ILSVRC2012_val_00.JPEG").unlink()
    with pytest.raises(imagenet.PaperDataError, match=r"ImageNet-C image missing: .*fog/2/n01440764"):
        imagenet.imagenet_c_bundle(
            {"roots": {"imagenet_c": str(c)}, "image_size": 32, "c_per_cell": None}, WNIDS[:1], 0
        )


def test_objectnet_without_mapping_and_missing_roots_are_clear(roots) -> None:
    d = {"roots": {k: v for k, v in roots.items() if k != "objectnet_mapping"}, "image_size": 32, "n_test": None}
    with pytest.raises(imagenet.PaperDataError, match="objectnet_mapping"):
        imagenet.objectnet_bundle(d, WNIDS, 0)
    with pytest.raises(imagenet.PaperDataError, match=r"data.roots.imagenet_v2 = /nope does not exist"):
        imagenet.v2_bundle({"roots": {"imagenet_v2": "/nope"}, "image_size": 32}, WNIDS, 0)


def _p_root_with_mp4(roots: dict[str, str], tmp_path: Path) -> Path:
    """A copy of the P root where one perturbation holds its sequences as .mp4 files (written with OpenCV)."""
    import cv2

    p = tmp_path / "imagenet_p"
    shutil.copytree(roots["imagenet_p"], p)
    for seq_dir in sorted((p / "rotate").glob("*/*")):
        frames = sorted(seq_dir.glob("*.png"))
        w = cv2.VideoWriter(str(seq_dir) + ".mp4", cv2.VideoWriter_fourcc(*"mp4v"), 5, (16, 16))
        for f in frames:
            w.write(cv2.imread(str(f)))
        w.release()
        shutil.rmtree(seq_dir)
    return p


def test_p_mp4_decodes_or_fails_naming_the_file(roots, tmp_path, monkeypatch) -> None:
    if importlib.util.find_spec("cv2") is None:
        pytest.skip("OpenCV is not installed here: nothing writes the .mp4 fixture")
    p = _p_root_with_mp4(roots, tmp_path)
    d = {"roots": {"imagenet_p": str(p)}, "image_size": 32, "p_sequences": 2, "p_frames": 3}
    bundle = imagenet.imagenet_p_bundle(d, WNIDS, 0)
    assert bundle["x"].shape == (10, 2, 3, 3, 32, 32)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",  # an environment without PyAV and OpenCV
        lambda name, *a: None if name in ("av", "cv2") else real_find_spec(name, *a),
    )
    with pytest.raises(
        imagenet.PaperDataError,
        match=r"cannot decode .*rotate/n01440764/seq0\.mp4: no video "
        r"decoder.*extract its frames",
    ):
        imagenet.imagenet_p_bundle(d, WNIDS, 0)
    for pert in shifts.TEST_PERTURBATIONS:  # an mp4-only root is refused at plan time, so nothing starts
        if pert != "rotate":
            for seq_dir in sorted((p / pert).glob("*/*")):
                shutil.rmtree(seq_dir)
                (seq_dir.parent / f"{seq_dir.name}.mp4").write_bytes(b"")
    problems = data.check_roots({"imagenet_p": str(p)}, ["imagenet_p"])
    assert len(problems) == 1 and "only .mp4 sequences and no video decoder" in problems[0]


def test_naive_teacher_runs_on_the_folders_and_is_evaluated_everywhere(roots, eval_sets, tmp_path) -> None:
    """build_eval_sets, build_pool, pretrain_teacher -> naive_teacher (ResNet-34 at 32 px, 1 epoch, the same budget
    as the robust one: it needs the pool's size and the pretraining) -> every suite, masked logits included."""
    b, _ = eval_sets
    plan = build_plan(
        _spec(
            roots,
            (
                "grid.student=[]",
                "grid.method=[ours]",
                "teacher_train.epochs=1",
                "teacher_train.init_epochs=1",
                "teacher_train.naive_baseline=true",
            ),
        )
    )
    teacher, done = _stage(plan, "naive_teacher"), {}
    for stage in (plan.stages[k] for k in _upstream(plan, teacher)):
        done[stage.key] = out = tmp_path / f"{stage.kind}-{stage.key}"
        out.mkdir()
        m = run_stage(stage.kind, stage.inputs, {r: done[k] for r, k in stage.deps.items()}, out, _ctx())
    out = done[teacher.key]
    assert 0.0 <= m["acc/clean"] <= 1.0 and "acc/c/gaussian_noise/5" in m and "fp/mean" in m
    net = load_model_folder(out).eval()
    with torch.no_grad():
        all_m = evaluate_suites(classifier_predictor(net), b, ALL_SUITES, embed=lambda x: net(x))
    for name in ("v2", "r", "a", "sketch", "objectnet", "objectnet_c"):
        assert 0.0 <= all_m[f"acc/{name}"] <= 1.0, name
    assert {"acc/transfer/tiny_imagenet", "acc/transfer/flowers102"} <= set(all_m)
    assert all_m["acc/clean"] == pytest.approx(m["acc/clean"])


def test_whole_dag_and_one_cell_run_on_the_folders(roots, tmp_path) -> None:
    """pool -> robust teacher -> pretrained-stand-in student -> features -> targets -> an `ours` cell, all from
    folders; the cell reports every shift set (masked logits through the selection rules) and both transfer sets."""
    plan = build_plan(_spec(roots, ("grid.method=[ours]", "teacher_train.epochs=1", "pretrain.epochs=1")))
    done: dict[str, Path] = {}
    for stage in plan.stages.values():
        out = tmp_path / f"{stage.kind}-{stage.key}"
        out.mkdir()
        deps = {role: done[k] for role, k in stage.deps.items()}
        if stage.kind == "cell":
            m = run_cell(stage.inputs, deps, out, _ctx())
        else:
            run_stage(stage.kind, stage.inputs, deps, out, _ctx())
        done[stage.key] = out
    for name in ("clean", "c", "v2", "r", "a", "sketch", "objectnet", "objectnet_c"):
        assert 0.0 <= m[f"acc/{name}"] <= 1.0 and f"f_correct/ours/{name}" in m, name
    assert "acc/max_logit/r" in m and "fp/mean" in m and "teacher/acc/c" in m
    assert {"acc/transfer/tiny_imagenet", "acc/transfer/flowers102"} <= set(m)


def test_plan_time_check_accepts_the_folders_and_wants_the_objectnet_mapping(roots) -> None:
    from orchestrator.spec import SpecError
    from orchestrator.sweep import check_data_roots

    check_data_roots(_spec(roots), "smoke.yaml")  # every root in its layout: nothing to report
    without = {k: v for k, v in roots.items() if k != "objectnet_mapping"}
    with pytest.raises(SpecError, match="ObjectNet needs objectnet_mapping: a JSON file"):
        check_data_roots(_spec(without), "smoke.yaml")


def _decode_with_ray_tasks(inputs, out: Path, scratch: Path) -> None:
    """In a child process (tests/procs.py: no Ray driver in pytest): shards of 16 files, a local Ray of 2 CPUs."""
    from orchestrator import ray_backend
    from trainables import reading

    reading.READ_ROWS, reading.READ_MIN_ROWS = 16, 0
    ray_backend.start(None, num_cpus=2)
    try:
        ctx = StageContext(threads=1, scratch=scratch, read_shards=ray_backend.shard_map(1, 0, 2))
        run_stage("build_eval_sets", inputs, {}, out, ctx)
    finally:
        ray_backend.stop()


@pytest.mark.timeout(300)
def test_eval_sets_decoded_by_ray_tasks_are_the_serial_bytes(roots, eval_sets, tmp_path) -> None:
    """build_eval_sets with its files decoded by CPU-only Ray shard tasks (a local Ray of 2 CPUs, shards of 16
    files: the 75 C cells x 2 images alone are 10 shards) writes the same sets as the serial fixture, and leaves
    each decoded shard in its scratch folder for a retry."""
    ref, inputs = eval_sets
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    out.mkdir()
    run_in_child("tests.test_paper_data:_decode_with_ray_tasks", inputs, out, scratch, tmp=tmp_path / "child")
    got = load(out / "eval.pt")
    for name in ("clean", "c", "p", "v2", "r", "a", "sketch", "objectnet"):
        assert torch.equal(got[name]["x"], ref[name]["x"]) and torch.equal(got[name]["y"], ref[name]["y"]), name
    assert len(list(scratch.rglob("*.done"))) >= 15
