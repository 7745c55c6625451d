"""The paper's data (`data.source: imagenet`): splits, shift sets and transfer sets read from folders on disk.

Everything here produces the same in-memory structures as the embedded path (uint8 `ImageSet`s and the eval
bundles of `trainables.evaluate`), so every stage after the reading is shared. Labels are always indices into the
ImageNet class list = the sorted wnids of `<roots.imagenet>/train`; sets that cover only some classes (R, A,
ObjectNet) carry `class_subset` (the ImageNet indices allowed) so evaluation masks the logits to them.

Memory: sets are uint8, 150 kB per image at 224 px, read through the stage's `trainables.reading.Reader` (shards
decoded in parallel under Ray, resumable after a kill) into `data.image_buffer`: a set above
`footprint.RESIDENT_BYTES` is a memory map of a temporary file, so it costs disk ($TMPDIR), not memory, and later
stages read the cache entries memory-mapped too (`common.load`). `data.n_train` bounds the clean train split (and
`data.n_test` the val split and every shift/transfer set; `data.c_per_cell` and `data.p_sequences` bound C and P);
None reads everything (the whole train split then needs ~190 GB of disk per reading stage).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from trainables import shifts
from trainables.data import (
    IMAGE_EXTENSIONS,
    ImageSet,
    PaperDataError,
    class_subset,
    list_images,
    load_folder,
    seeded_subset,
)
from trainables.reading import SERIAL, Entry, Reader

TRANSFER_SETS = ("tiny_imagenet", "flowers102", "stanford_cars", "cifar100", "fgvc_aircraft", "sun397")
OBJECTNET_MAPPING_KEY = "objectnet_mapping"  # data.roots entry: JSON {objectnet folder: [wnid, ...]}


def root_of(d: dict[str, Any], name: str) -> Path:
    """The configured root of dataset `name`, which must exist (plan time checks it too; a stage re-checks
    because roots can vanish between planning and running on another machine)."""
    root = (d.get("roots") or {}).get(name)
    if not root:
        raise PaperDataError(f"data.roots.{name} is not set; the paper profile needs it for this stage")
    if not Path(root).is_dir():
        raise PaperDataError(f"data.roots.{name} = {root} does not exist or is not a folder")
    return Path(root)


def _subdirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir())


def imagenet_wnids(d: dict[str, Any]) -> list[str]:
    """The 1000 (or, in tests, fewer) ImageNet classes in label order: the sorted wnid folders of train/."""
    train = root_of(d, "imagenet") / "train"
    if not train.is_dir() or not (wnids := _subdirs(train)):
        raise PaperDataError(f"data.roots.imagenet: {train} has no <wnid> folders (layout train/<wnid>/*.JPEG)")
    return wnids


def _read_split(folder: Path, classes: list[str], size: int, limit: int | None, seed: int, reader: Reader) -> ImageSet:
    if not folder.is_dir():
        raise PaperDataError(f"{folder} does not exist (expected <wnid>/ folders of images)")
    s = load_folder(folder, size, classes, limit, seed, reader.read)
    if not len(s.labels):
        raise PaperDataError(f"{folder} holds no images of the {len(classes)} ImageNet classes")
    return s


def imagenet_split(d: dict[str, Any], seed: int, reader: Reader = SERIAL) -> tuple[ImageSet, ImageSet]:
    """train = <imagenet>/train/<wnid>/*, test = <imagenet>/val/<wnid>/*, each a seeded subsample of
    `n_train` / `n_test` images (None: all), resized to `image_size`."""
    root, wnids, size = root_of(d, "imagenet"), imagenet_wnids(d), d["image_size"]
    train = _read_split(root / "train", wnids, size, d.get("n_train"), seed, reader)
    return train, imagenet_val(d, seed, reader)


def imagenet_val(d: dict[str, Any], seed: int, reader: Reader = SERIAL) -> ImageSet:
    """The test side of `imagenet_split` alone (the eval sets need no train image: reading them costs time)."""
    root, wnids = root_of(d, "imagenet"), imagenet_wnids(d)
    return _read_split(root / "val", wnids, d["image_size"], d.get("n_test"), seed + 1, reader)


# --------------------------------------------------------------------------------------------- ImageNet-C


def _c_cell(root: Path, corruption: str, severity: int) -> Path:
    cell = root / corruption / str(severity)
    if not cell.is_dir():
        raise PaperDataError(
            f"data.roots.imagenet_c = {root} has no folder {corruption}/{severity}; needs all 15 "
            f"corruptions x severities 1-5: {', '.join(shifts.CORRUPTIONS)}"
        )
    return cell


def imagenet_c_bundle(d: dict[str, Any], wnids: list[str], seed: int, reader: Reader = SERIAL) -> dict[str, Any]:
    """The C bundle read from <imagenet_c>/<corruption>/<severity>/<wnid>/*: the SAME `c_per_cell` images (by
    relative path, seeded) in every one of the 75 cells, so one label vector serves all, as on the embedded path."""
    root, size = root_of(d, "imagenet_c"), d["image_size"]
    first = _c_cell(root, shifts.CORRUPTIONS[0], shifts.SEVERITIES[0])
    index = {w: i for i, w in enumerate(wnids)}
    rel = [p.relative_to(first) for p in list_images(first) if p.relative_to(first).parts[0] in index]
    if not rel:
        raise PaperDataError(f"{first} holds no images in <wnid>/ folders of the ImageNet classes")
    rel = [rel[i] for i in seeded_subset(len(rel), d.get("c_per_cell"), seed)]
    files: list[Entry] = []  # cell after cell, in (corruption, severity) order: the rows of x, flattened
    for corruption in shifts.CORRUPTIONS:
        for severity in shifts.SEVERITIES:
            cell = _c_cell(root, corruption, severity)
            for r in rel:
                if not (cell / r).is_file():
                    raise PaperDataError(
                        f"ImageNet-C image missing: {cell / r} (every cell must hold the images of {first})"
                    )
                files.append(str(cell / r))
    x = reader.read(files, size).view(len(shifts.CORRUPTIONS), len(shifts.SEVERITIES), len(rel), 3, size, size)
    y = torch.tensor([index[r.parts[0]] for r in rel], dtype=torch.int64)
    return {"x": x, "y": y, "corruptions": list(shifts.CORRUPTIONS)}


# --------------------------------------------------------------------------------------------- ImageNet-P


def _frame_key(p: Path) -> tuple[int, Any]:
    return (0, int(p.stem)) if p.stem.isdigit() else (1, p.stem)


def _sequence_ids(folder: Path) -> set[str]:
    """'<wnid>/<seq>' of every sequence under <perturbation>/: frame folders or .mp4 files."""
    ids = set()
    for wnid in _subdirs(folder):
        for entry in (folder / wnid).iterdir():
            if entry.is_dir() or entry.suffix == ".mp4":
                ids.add(f"{wnid}/{entry.stem if entry.suffix == '.mp4' else entry.name}")
    return ids


def _sequence_entries(folder: Path, seq: str, n_frames: int) -> list[Entry]:
    """A sequence's first `n_frames` frames as read entries: its frame files, or (its .mp4, n_frames)."""
    frames_dir, video = folder / seq, folder / f"{seq}.mp4"
    if frames_dir.is_dir():
        frames = sorted((p for p in frames_dir.iterdir() if p.suffix in IMAGE_EXTENSIONS), key=_frame_key)
        if len(frames) < n_frames:
            raise PaperDataError(
                f"{frames_dir} has {len(frames)} frames; data.p_frames = {n_frames} needs at least that many"
            )
        return [str(f) for f in frames[:n_frames]]
    if video.is_file():
        return [(str(video), n_frames)]
    raise PaperDataError(f"ImageNet-P sequence missing: neither {frames_dir}/ nor {video} exists")


def imagenet_p_bundle(d: dict[str, Any], wnids: list[str], seed: int, reader: Reader = SERIAL) -> dict[str, Any]:
    """The P bundle from <imagenet_p>/<perturbation>/<wnid>/<seq>/<frame> (or <seq>.mp4): `p_sequences`
    sequences (seeded, among those present in all 10 test perturbations) x the first `p_frames` frames."""
    root, size, n = root_of(d, "imagenet_p"), d["image_size"], d["p_frames"]
    index = {w: i for i, w in enumerate(wnids)}
    common: set[str] | None = None
    for pert in shifts.TEST_PERTURBATIONS:
        if not (root / pert).is_dir():
            raise PaperDataError(
                f"data.roots.imagenet_p = {root} has no folder {pert}/; needs the 10 test "
                f"perturbations: {', '.join(shifts.TEST_PERTURBATIONS)}"
            )
        ids = {s for s in _sequence_ids(root / pert) if s.split("/")[0] in index}
        common = ids if common is None else common & ids
    seqs = sorted(common or ())
    if not seqs:
        raise PaperDataError(f"data.roots.imagenet_p = {root}: no <wnid>/<sequence> is present in all 10 perturbations")
    seqs = [seqs[i] for i in seeded_subset(len(seqs), d["p_sequences"], seed + 7)]
    entries = [e for pert in shifts.TEST_PERTURBATIONS for seq in seqs for e in _sequence_entries(root / pert, seq, n)]
    x = reader.read(entries, size).view(len(shifts.TEST_PERTURBATIONS), len(seqs), n, 3, size, size)
    y = torch.tensor([index[s.split("/")[0]] for s in seqs], dtype=torch.int64)
    return {"x": x, "y": y, "perturbations": list(shifts.TEST_PERTURBATIONS)}


# ------------------------------------------------------------------------------------------ V2, R, A, Sketch, ObjectNet


def _bundle(s: ImageSet, subset: list[int] | None = None, target: list[int] | None = None) -> dict[str, Any]:
    b: dict[str, Any] = {"x": s.images, "y": s.labels}
    if subset is not None:
        b["class_subset"] = torch.tensor(subset, dtype=torch.int64)
    if target is not None:
        b["class_target"] = torch.tensor(target, dtype=torch.int64)
    return b


def v2_bundle(d: dict[str, Any], wnids: list[str], seed: int, reader: Reader = SERIAL) -> dict[str, Any]:
    """ImageNet-V2: folders named by class index 0..999, which IS the sorted-wnid order; labels stay indices."""
    root = root_of(d, "imagenet_v2")
    bad = [n for n in _subdirs(root) if not (n.isdigit() and int(n) < len(wnids))]
    if bad:
        raise PaperDataError(
            f"data.roots.imagenet_v2 = {root}: folder {bad[0]!r} is not a class index 0..{len(wnids) - 1}"
        )
    s = _read_split(root, [str(i) for i in range(len(wnids))], d["image_size"], d.get("n_test"), seed, reader)
    return _bundle(s)


def wnid_set_bundle(
    d: dict[str, Any], name: str, wnids: list[str], seed: int, masked: bool, reader: Reader = SERIAL
) -> dict[str, Any]:
    """R / A / Sketch: <root>/<wnid>/* (Sketch also <root>/sketch/<wnid>/*). R and A cover 200 classes: their
    ImageNet indices are recorded as `class_subset`, so predictions are the argmax over those logits only."""
    root = root_of(d, name)
    if name == "imagenet_sketch" and (root / "sketch").is_dir():
        root = root / "sketch"
    found = _subdirs(root)
    try:
        subset = class_subset(found, wnids)
    except ValueError as err:
        raise PaperDataError(f"data.roots.{name} = {root}: {err}") from None
    s = _read_split(root, wnids, d["image_size"], d.get("n_test"), seed, reader)
    return _bundle(s, subset if masked else None)


def objectnet_mapping(d: dict[str, Any]) -> dict[str, list[str]]:
    """{ObjectNet folder: [ImageNet wnids]} from the JSON file at data.roots.objectnet_mapping. Why a file: the
    113 shared classes map many-to-one onto ImageNet classes and that table ships with ObjectNet, not with us."""
    path = (d.get("roots") or {}).get(OBJECTNET_MAPPING_KEY)
    if not path or not Path(path).is_file():
        raise PaperDataError(
            f"ObjectNet needs data.roots.{OBJECTNET_MAPPING_KEY}: a JSON file "
            "{objectnet folder: [wnid, ...]} for its 113 ImageNet classes; got "
            f"{path or 'nothing'}"
        )
    try:
        mapping = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise PaperDataError(f"data.roots.{OBJECTNET_MAPPING_KEY} = {path}: not readable JSON ({err})") from None
    if not isinstance(mapping, dict) or not all(isinstance(v, list) and v for v in mapping.values()):
        raise PaperDataError(f"data.roots.{OBJECTNET_MAPPING_KEY} = {path}: expected {{folder: [wnid, ...]}}")
    return mapping


def objectnet_bundle(d: dict[str, Any], wnids: list[str], seed: int, reader: Reader = SERIAL) -> dict[str, Any]:
    """ObjectNet's mapped classes: images/<class>/* (or <class>/*). Label = the ImageNet index of the class's
    first wnid; logits are masked to all mapped wnids and a prediction counts as that first wnid (class_target)."""
    root = root_of(d, "objectnet")
    if (root / "images").is_dir():
        root = root / "images"
    mapping = {k: v for k, v in objectnet_mapping(d).items() if (root / k).is_dir()}
    if not mapping:
        raise PaperDataError(f"data.roots.objectnet = {root}: none of the mapped ObjectNet classes has a folder")
    index = {w: i for i, w in enumerate(wnids)}
    unknown = [w for ws in mapping.values() for w in ws if w not in index]
    if unknown:
        raise PaperDataError(
            f"data.roots.{OBJECTNET_MAPPING_KEY}: {unknown[0]!r} is not a wnid of data.roots.imagenet/train"
        )
    folders = sorted(mapping)
    on = load_folder(root, d["image_size"], folders, d.get("n_test"), seed, reader.read)  # labels index `folders`
    first = torch.tensor([index[mapping[f][0]] for f in folders], dtype=torch.int64)
    pairs = sorted({(index[w], index[mapping[f][0]]) for f in folders for w in mapping[f]})
    s = ImageSet(on.images, first[on.labels], list(wnids))
    return _bundle(s, [p[0] for p in pairs], [p[1] for p in pairs])


def objectnet_c_bundle(objectnet: dict[str, Any], d: dict[str, Any], seed: int) -> dict[str, Any]:
    """ObjectNet-C: the 15 x 5 C corruptions applied to (a `c_per_cell` subset of) ObjectNet, as in the paper."""
    cs = shifts.build_c_set(ImageSet(objectnet["x"], objectnet["y"], []), seed=seed, n_per_cell=d["c_per_cell"])
    return {
        "x": cs.images,
        "y": cs.labels,
        "corruptions": list(cs.corruptions),
        **{k: objectnet[k] for k in ("class_subset", "class_target") if k in objectnet},
    }


def shift_bundles(
    d: dict[str, Any], suites: list[str], wnids: list[str], seed: int, reader: Reader = SERIAL
) -> dict[str, Any]:
    """Every requested ImageNet shift set (v2, r, a, sketch, objectnet, objectnet_c) as an eval bundle."""
    out: dict[str, Any] = {}
    if "v2" in suites:
        out["v2"] = v2_bundle(d, wnids, seed, reader)
    for suite, name, masked in (
        ("r", "imagenet_r", True),
        ("a", "imagenet_a", True),
        ("sketch", "imagenet_sketch", False),
    ):
        if suite in suites:
            out[suite] = wnid_set_bundle(d, name, wnids, seed, masked, reader)
    if "objectnet" in suites or "objectnet_c" in suites:
        on = objectnet_bundle(d, wnids, seed, reader)
        if "objectnet" in suites:
            out["objectnet"] = on
        if "objectnet_c" in suites:
            out["objectnet_c"] = objectnet_c_bundle(on, d, seed)
    return out


# --------------------------------------------------------------------------------------------- transfer


def transfer_bundles(d: dict[str, Any], seed: int, reader: Reader = SERIAL) -> dict[str, Any]:
    """One bundle per configured transfer set (data.roots keys among TRANSFER_SETS): train/<class>/* and
    test/<class>/* (Tiny-ImageNet: train/<wnid>/images/* and val/<wnid>/*), class list = train's folders,
    each side a seeded subsample of n_train / n_test images (linear probes run on features held in memory)."""
    names = [n for n in TRANSFER_SETS if (d.get("roots") or {}).get(n)]
    if not names:
        raise PaperDataError(f"eval suite 'transfer' needs one of data.roots.{{{', '.join(TRANSFER_SETS)}}}")
    out: dict[str, Any] = {}
    for name in names:
        root = root_of(d, name)
        test_dir = root / ("val" if name == "tiny_imagenet" and not (root / "test").is_dir() else "test")
        if not (root / "train").is_dir():
            raise PaperDataError(f"data.roots.{name} = {root} has no train/ folder of <class>/ images")
        classes = _subdirs(root / "train")
        tr = _read_split(root / "train", classes, d["image_size"], d.get("n_train"), seed, reader)
        te = _read_split(test_dir, classes, d["image_size"], d.get("n_test"), seed + 1, reader)
        out[f"transfer/{name}"] = {
            "train_x": tr.images,
            "train_y": tr.labels,
            "test_x": te.images,
            "test_y": te.labels,
            "name": name,
        }
    return out
