"""Embedded data, augmentations and shifts: real data, reproducible for a seed, and doing what they claim."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from trainables import augment, data, shifts


@pytest.fixture(scope="module")
def split():
    return data.load_mnist5k(seed=0, n_train=300, n_test=100)


@pytest.fixture(scope="module")
def trained(split):
    """One epoch of the DeepAugment autoencoder on the split, trained once for the module (a minute or more on
    the 2-core CI machine); each test gets its own copy, so none sees another's changes."""
    return augment.train_autoencoder(split[0].images, epochs=1, seed=0)


@pytest.fixture
def ae(trained):
    return copy.deepcopy(trained[0])


def test_mnist_split_is_stratified_padded_rgb(split) -> None:
    train, test = split
    assert train.images.shape == (300, 3, 32, 32) and train.images.dtype == torch.uint8
    assert torch.bincount(train.labels).tolist() == [30] * 10
    assert torch.equal(train.images[:, 0], train.images[:, 1])
    assert int(train.images[:, :, :2].max()) == 0  # the 2-pixel padding is black
    again, _ = data.load_mnist5k(seed=0, n_train=300, n_test=100)
    assert torch.equal(again.images, train.images)
    other, _ = data.load_mnist5k(seed=1, n_train=300, n_test=100)
    assert not torch.equal(other.images, train.images)


def test_digits_transfer_split() -> None:
    tr, te = data.load_digits_transfer(seed=0, size=32)
    assert len(tr) + len(te) == 1797 and tr.images.shape[1:] == (3, 32, 32)


def test_autoencoder_reconstruction_is_checked(split, trained) -> None:
    train, _ = split
    rep = trained[1]
    assert rep["recon_mse"] < 0.5 * rep["mean_image_mse"]
    with pytest.raises(augment.CollapsedAutoencoder, match="mean-image"):
        augment.check_reconstruction({"recon_mse": 0.06, "mean_image_mse": 0.05})
    collapsed = augment.ConvAutoencoder()
    with torch.no_grad():
        for p in collapsed.parameters():
            p.zero_()
    with pytest.raises(augment.CollapsedAutoencoder):
        augment.check_reconstruction(augment.reconstruction_report(collapsed, train.images))


def test_pool_is_augmented_reproducible_and_keeps_labels(split, ae) -> None:
    train, _ = split
    cfg = augment.PoolConfig(n_images=120)
    a = augment.build_pool(train, ae, seed=3, cfg=cfg)
    b = augment.build_pool(train, ae, seed=3, cfg=cfg)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert a.images.shape == (120, 3, 32, 32) and a.images.dtype == torch.uint8
    c = augment.build_pool(train, ae, seed=4, cfg=cfg)
    assert not torch.equal(a.images, c.images)
    assert not any(torch.equal(img, t) for img in a.images[:10] for t in train.images)  # every image changed


def test_deepaugment_and_noise2net_change_images(split, ae) -> None:
    train, _ = split
    x = train.images[:16]
    for y in (augment.deepaugment(x, ae, seed=0), augment.noise2net(x, seed=0)):
        assert y.shape == x.shape and y.dtype == torch.uint8
        assert (y.float() - x.float()).abs().mean() > 1.0


def test_noise2net_online_changes_the_given_share_each_image_by_its_own_net(split) -> None:
    x = split[0].images[:8]
    y = augment.noise2net_online(x, torch.Generator().manual_seed(0), share=0.5)
    assert y.dtype == torch.uint8 and torch.equal(y[4:], x[4:])  # the other half untouched
    changed = (y[:4].float() - x[:4].float()).abs().mean(dim=(1, 2, 3))
    assert (changed > 1.0).all()
    # one net per image: the same image twice in a batch comes out different
    twin = augment.noise2net_online(torch.stack([x[0], x[0]]), torch.Generator().manual_seed(1), share=1.0)
    assert not torch.equal(twin[0], twin[1])
    again = augment.noise2net_online(x, torch.Generator().manual_seed(0), share=0.5)
    assert torch.equal(y, again)  # seeded
    assert torch.equal(augment.noise2net_online(x, torch.Generator(), share=0.0), x)


def test_augmix_views_seeded(split) -> None:
    x = split[0].images[:8]
    a1, a2 = augment.augmix_views(x, seed=5)
    b1, _ = augment.augmix_views(x, seed=5)
    assert torch.equal(a1, b1) and not torch.equal(a1, a2)


def test_fraction_sampling_is_nested() -> None:
    small, big = augment.sample_fraction(100, 0.25, 0), augment.sample_fraction(100, 0.5, 0)
    assert len(small) == 25 and len(big) == 50 and set(small.tolist()) <= set(big.tolist())
    assert len(augment.sample_fraction(3, 0.01, 0)) == 1
    with pytest.raises(ValueError):
        augment.sample_fraction(10, 0.0, 0)


def test_c_set_shape_severity_and_reproducibility(split) -> None:
    _, test = split
    c = shifts.build_c_set(test, seed=0, n_per_cell=4)
    assert c.images.shape == (15, 5, 4, 3, 32, 32) and len(c.labels) == 4
    clean = test.images[:0]
    idx = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:4].sort().values
    clean = test.images[idx].float()
    d1 = (c.images[:, 0].float() - clean).abs().mean()
    d5 = (c.images[:, 4].float() - clean).abs().mean()
    assert d5 > d1
    assert torch.equal(shifts.build_c_set(test, seed=0, n_per_cell=4).images, c.images)
    state = c.to_state()
    assert shifts.CSet.from_state(state).corruptions == shifts.CORRUPTIONS


def test_c_set_of_distinct_images_maps_every_slot_to_its_image(split) -> None:
    """With `n_distinct`, the 75 cells share out that many test images: `sources` says which one each slot holds
    (what the bootstrap resamples), every one is used, and each slot's image has its slot's label."""
    _, test = split
    c = shifts.build_c_set(test, seed=0, n_per_cell=4, n_distinct=30)
    sub = shifts._subsample(test, 30, 0)
    used = {i for i in range(30) if sub.labels[i] in c.labels}  # the classes that have a slot (4 slots here)
    assert c.sources.shape == (15, 5, 4) and set(c.sources.flatten().tolist()) == used and len(used) > 4
    assert (sub.labels[c.sources.long()] == c.labels).all()
    ci = shifts.CORRUPTIONS.index("brightness")  # mild at severity 1: the nearest clean image is the source
    d = (c.images[ci, 0, :, None].float() - sub.images[None].float()).abs().mean(dim=(2, 3, 4))
    assert torch.equal(d.argmin(dim=1), c.sources[ci, 0].long())
    assert shifts.CSet.from_state(c.to_state()).sources is not None
    same = shifts.build_c_set(test, seed=0, n_per_cell=4)  # one subset in every cell: slot k is image k
    assert torch.equal(same.sources, torch.arange(4, dtype=torch.int32).expand(15, 5, 4))


def test_p_set_sequences(split) -> None:
    _, test = split
    p = shifts.build_p_set(test, seed=0, n_sequences=3, n_frames=5)
    assert p.images.shape == (10, 3, 5, 3, 32, 32)
    step = (p.images[:, :, 1:].float() - p.images[:, :, :-1].float()).abs().mean(dim=(1, 3, 4, 5))
    assert (step > 0).all()  # every perturbation changes consecutive frames
    assert (step < 40).all()  # ... a little


def test_check_roots_reports_missing_and_empty(tmp_path: Path) -> None:
    from PIL import Image

    good = tmp_path / "imagenet" / "val" / "n01440764"
    good.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(good / "a.JPEG")
    (tmp_path / "empty").mkdir()
    problems = data.check_roots(
        {
            "imagenet": str(tmp_path / "imagenet"),
            "imagenet_r": str(tmp_path / "empty"),
            "imagenet_a": str(tmp_path / "nope"),
        },
        ["imagenet", "imagenet_r", "imagenet_a", "imagenet_c"],
    )
    assert len(problems) == 3
    assert any("no images" in p and "imagenet_r" in p for p in problems)
    assert any("does not exist" in p for p in problems) and any("no root given" in p for p in problems)
    ds = data.load_folder(tmp_path / "imagenet" / "val", size=16)
    assert ds.images.shape == (1, 3, 16, 16) and ds.classes == ["n01440764"]
    assert data.class_subset(["n2", "n0"], ["n0", "n1", "n2"]) == [2, 0]
