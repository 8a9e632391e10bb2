"""Data: digits, npz, splits, seeded batches, augmentation and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evoray.data import DataConfig, build_data
from evoray.data.sources import apply_cutout
from evoray.errors import ConfigError
from tests.conftest import shared_file


def _batches(source, n: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for i, b in enumerate(source):
        if i == n:
            break
        out.append(b)
    return out


def test_digits_shapes_and_normalisation() -> None:
    d = build_data(DataConfig(dataset="digits"), seed=0)
    assert (d.num_classes, d.in_channels, d.image_size) == (10, 1, 8)
    assert d.train.num_examples + d.test.num_examples == 1797
    x, y = next(iter(d.test))
    assert x.shape[1:] == (1, 8, 8) and y.dtype == torch.int64
    full = torch.cat([b[0] for b in d.test])
    assert abs(full.mean().item()) < 0.15 and 0.8 < full.std().item() < 1.2
    assert set(torch.cat([b[1] for b in d.test]).tolist()) == set(range(10))


def test_test_split_does_not_depend_on_the_run_seed() -> None:
    a = torch.cat([b[0] for b in build_data(DataConfig(), seed=0).test])
    b = torch.cat([b[0] for b in build_data(DataConfig(), seed=5).test])
    assert torch.equal(a, b)


def test_seeded_batches() -> None:
    cfg = DataConfig(dataset="digits", batch_size=32)
    a = _batches(build_data(cfg, seed=1).train)
    b = _batches(build_data(cfg, seed=1).train)
    c = _batches(build_data(cfg, seed=2).train)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))
    assert not torch.equal(a[0][1], c[0][1])
    src = build_data(cfg, seed=1).train
    src.set_epoch(3)
    e3 = _batches(src)
    assert not torch.equal(e3[0][1], a[0][1])
    src2 = build_data(cfg, seed=1).train
    src2.set_epoch(3)
    assert torch.equal(_batches(src2)[0][0], e3[0][0])  # resuming at epoch 3 gives epoch 3's batches


def test_search_split_sizes_and_disjointness() -> None:
    cfg = DataConfig(dataset="digits", train_portion=0.6, augment=False, batch_size=10_000)
    d = build_data(cfg, seed=0, split="search")
    assert d.valid is not None
    n_train, n_valid = d.train.num_examples, d.valid.num_examples
    assert n_train + n_valid == build_data(cfg, seed=0).train.num_examples
    assert n_train == round(0.6 * (n_train + n_valid))
    xa = next(iter(d.train))[0].flatten(1)
    xb = next(iter(d.valid))[0].flatten(1)
    rows_a = {tuple(r.tolist()) for r in xa}
    shared = sum(tuple(r.tolist()) in rows_a for r in xb)
    assert shared <= 5  # digits has a few exact duplicate images; the index split itself is disjoint


def test_cutout_zeroes_a_square() -> None:
    x = torch.ones(4, 3, 16, 16)
    out = apply_cutout(x, 4, torch.Generator().manual_seed(0))
    holes = (out == 0).all(1)  # (B, H, W)
    for h in holes:
        ys, xs = torch.nonzero(h, as_tuple=True)
        assert 1 <= len(ys) <= 16
        assert ys.max() - ys.min() + 1 <= 4 and xs.max() - xs.min() + 1 <= 4
        assert len(ys) == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)  # a rectangle
    centre = apply_cutout(torch.ones(64, 1, 16, 16), 4, torch.Generator().manual_seed(1))
    assert ((centre == 0).sum((1, 2, 3)) == 16).any()  # an unclipped hole is exactly 4x4


def test_augmentation_changes_training_batches_only() -> None:
    cfg = DataConfig(dataset="digits", batch_size=64, cutout=3)
    d = build_data(cfg, seed=0)
    x, _ = next(iter(d.train))
    assert (x == 0).any()
    t1, t2 = next(iter(d.test))[0], next(iter(d.test))[0]
    assert torch.equal(t1, t2)


def test_npz_cifar_subsets() -> None:
    train, test = shared_file("cifar10-train-10k.npz"), shared_file("cifar10-test-2k.npz")
    cfg = DataConfig(dataset="npz", root=str(train), test_root=str(test), limit_train=500, limit_test=200, cutout=16)
    d = build_data(cfg, seed=0)
    assert (d.num_classes, d.in_channels, d.image_size) == (10, 3, 32)
    assert d.train.num_examples == 500 and d.test.num_examples == 200
    x, y = next(iter(d.train))
    assert x.shape == (64, 3, 32, 32) and len(set(y.tolist())) > 3  # rows were shuffled before the limit


def test_npz_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"npz file '/nonexistent/x\.npz' does not exist"):
        build_data(DataConfig(dataset="npz", root="/nonexistent/x.npz"), seed=0)
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((4, 8, 8, 3), dtype=np.uint8))
    with pytest.raises(ConfigError, match=r"lacks key 'labels' \(has: images\)"):
        build_data(DataConfig(dataset="npz", root=str(bad)), seed=0)


def test_missing_cifar_root_names_the_path(tmp_path) -> None:
    with pytest.raises(ConfigError, match=rf"CIFAR-10 not found under '{tmp_path}'.*cifar-10-batches-py"):
        build_data(DataConfig(dataset="cifar10", root=str(tmp_path)), seed=0)


def test_unknown_dataset_lists_valid_names() -> None:
    with pytest.raises(ConfigError, match="unknown dataset 'mnist'; valid: digits, cifar10"):
        build_data(DataConfig(dataset="mnist"), seed=0)
