"""Data: digits, CIFAR, npz and ImageNet folders; splits, seeded batches, batched augmentation and clear errors."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from evoray.data import DataConfig, DataSplits, TensorSource, build_data, describe
from evoray.data.datasets import limit, search_split
from evoray.data.sources import Augment, derive_seed, with_batch_size
from evoray.data.transforms import channel_stats, cutout, random_crop, random_flip, resize
from evoray.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"  # real data beside the checkout, read in place, never copied
DIGEST = """
import hashlib, torch
from evoray.data.sources import Augment, TensorSource
x = torch.arange(300 * 3 * 8 * 8, dtype=torch.float32).view(300, 3, 8, 8) % 251
src = TensorSource(x, torch.arange(300) % 10, 64, scale=250.0, mean=(0.5,) * 3, std=(0.25,) * 3, shuffle=True,
                   augment=Augment(crop_pad=1, flip=True, cutout=3), seed=7, stream=1)
src.set_epoch(2)
print(hashlib.sha256(b"".join(a.numpy().tobytes() + b.numpy().tobytes() for a, b in src)).hexdigest())
"""


def shared_file(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} is absent (real data lives in ../shared/data beside the checkout)")
    return path


def _first(source, n: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for i, batch in enumerate(source):
        if i == n:
            break
        out.append(batch)
    return out


def _all(source) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*source)
    return torch.cat(xs), torch.cat(ys)


def _same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))


def _sorted_rows(x: torch.Tensor) -> list[tuple[float, ...]]:
    return sorted(tuple(r) for r in x.flatten(1).tolist())


# -- digits -------------------------------------------------------------------------------------------------------


def test_digits_shapes_classes_and_normalisation() -> None:
    d = build_data(DataConfig(dataset="digits", augment=False), seed=0)
    assert isinstance(d, DataSplits) and d.valid is None
    assert (d.num_classes, d.in_channels, d.image_size) == (10, 1, 8)
    assert d.train.num_examples + d.test.num_examples == 1797
    assert d.test.num_examples == 359  # round(0.2 * class size) per class
    x, y = next(iter(d.train))
    assert x.shape == (64, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    train_x, _ = _all(d.train)
    assert train_x.shape[0] == d.train.num_examples  # 1438 = 22 * 64 + 30: nothing dropped
    assert abs(train_x.mean().item()) < 1e-4 and abs(train_x.std(unbiased=False).item() - 1.0) < 1e-4
    raw_mean = d.mean[0] * 16  # mean of the raw 0..16 training pixels
    assert 4.0 < raw_mean < 6.0 and len(d.std) == 1
    test_x, test_y = _all(d.test)
    counts = torch.bincount(test_y, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: 20% of each class (174..183 images)
    assert test_x.min().item() == pytest.approx(-d.mean[0] / d.std[0], abs=1e-5)  # a 0 pixel


def test_test_split_does_not_depend_on_the_run_seed() -> None:
    a = _all(build_data(DataConfig(), seed=0).test)
    b = _all(build_data(DataConfig(), seed=5, split="search").test)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_same_seed_same_batches_other_seed_other_batches() -> None:
    cfg = DataConfig(dataset="digits", batch_size=32, cutout=3)
    a = _first(build_data(cfg, seed=1).train)
    b = _first(build_data(cfg, seed=1).train)
    c = _first(build_data(cfg, seed=2).train)
    assert _same(a, b)
    assert not torch.equal(a[0][1], c[0][1])


def test_set_epoch_changes_the_order_reproducibly() -> None:
    cfg = DataConfig(dataset="digits", batch_size=32)
    src = build_data(cfg, seed=1).train
    e0 = _first(src)
    assert _same(e0, _first(src))  # iterating twice in one epoch repeats it
    src.set_epoch(3)
    e3 = _first(src)
    assert not torch.equal(e3[0][1], e0[0][1])
    resumed = build_data(cfg, seed=1).train
    resumed.set_epoch(3)
    assert _same(_first(resumed), e3)  # resuming at epoch 3 gives epoch 3's batches


def test_both_halves_of_a_search_split_reshuffle_per_epoch_reproducibly() -> None:
    """valid and arch follow (seed, epoch) as train does; an EvNAS key (generation, individual) is a pass of its own."""
    cfg = DataConfig(dataset="digits", batch_size=32, cutout=3)
    d, again = build_data(cfg, seed=1, split="search"), build_data(cfg, seed=1, split="search")
    for name in ("valid", "arch"):
        src, same = getattr(d, name), getattr(again, name)
        e0 = _first(src)
        src.set_epoch(1)
        e1 = _first(src)
        assert not torch.equal(e1[0][1], e0[0][1]), name
        same.set_epoch(1)
        assert _same(_first(same), e1), name
        src.set_epoch(1, 0)
        g0 = _first(src)
        src.set_epoch(1, 1)
        assert not torch.equal(_first(src)[0][1], g0[0][1]), name
    other = build_data(cfg, seed=2, split="search").valid
    assert other is not None and not torch.equal(_first(other)[0][1], _first(again.valid)[0][1])


def test_batches_repeat_in_a_fresh_process(capsys) -> None:
    out = subprocess.run([sys.executable, "-c", DIGEST], cwd=ROOT, capture_output=True, text=True, check=True)
    exec(DIGEST, {})
    assert out.stdout.strip() == capsys.readouterr().out.strip()


def test_search_split_sizes_and_disjointness() -> None:
    cfg = DataConfig(dataset="digits", train_portion=0.6, augment=False)
    d = build_data(cfg, seed=0, split="search")
    full = build_data(cfg, seed=0).train
    assert d.valid is not None
    n_train, n_valid = d.train.num_examples, d.valid.num_examples
    assert n_train + n_valid == full.num_examples == 1438
    assert n_train == round(0.6 * 1438)
    # train and valid together are exactly the training set: a partition, not an overlap
    parts = torch.cat([_all(d.train)[0], _all(d.valid)[0]])
    assert _sorted_rows(parts) == _sorted_rows(_all(full)[0])
    keep, held = search_split(1438, 0.6, seed=0)
    assert len(set(keep.tolist()) | set(held.tolist())) == 1438 and not set(keep.tolist()) & set(held.tolist())
    other_keep, _ = search_split(1438, 0.6, seed=1)
    assert not torch.equal(keep, other_keep)


def test_limit_keeps_a_seeded_random_subset_of_pairs() -> None:
    x, y = torch.arange(50, dtype=torch.float32).view(50, 1, 1, 1), torch.arange(50) + 100
    (a, ay), (b, by) = limit(x, y, 10, seed=0), limit(x, y, 10, seed=1)
    assert torch.equal(ay, a.flatten().long() + 100) and torch.equal(by, b.flatten().long() + 100)
    assert len(set(a.flatten().tolist())) == 10 and a.flatten().tolist() != list(range(10))
    assert not torch.equal(a, b) and torch.equal(limit(x, y, 10, seed=0)[0], a)
    assert limit(x, y, 0, seed=0)[0] is x  # 0: all


def test_whole_training_set_search_split_validates_on_the_test_set() -> None:
    """train_portion 1 (single-level SNAS): every training image trains, the test set validates, no alphas' half."""
    d = build_data(DataConfig(dataset="digits", train_portion=1.0, augment=False), seed=0, split="search")
    full = build_data(DataConfig(dataset="digits", augment=False), seed=0)
    assert d.valid is not None and d.arch is None
    assert _sorted_rows(_all(d.train)[0]) == _sorted_rows(_all(full.train)[0])
    assert _sorted_rows(_all(d.valid)[0]) == _sorted_rows(_all(full.test)[0])
    assert d.valid.num_examples == full.test.num_examples == 359


def test_arch_batches_are_the_validation_half_augmented_as_training() -> None:
    """The alphas' batches hold the validation half's images in its order, cropped as the training half's are."""
    d = build_data(DataConfig(dataset="digits", cutout=3), seed=0, split="search")
    assert isinstance(d.arch, TensorSource) and isinstance(d.valid, TensorSource) and isinstance(d.train, TensorSource)
    assert d.arch.augment == d.train.augment and d.valid.augment is None
    (ax, ay), (vx, vy) = _all(d.arch), _all(d.valid)
    assert torch.equal(ay, vy) and ax.shape == vx.shape and not torch.equal(ax, vx)
    plain = build_data(DataConfig(dataset="digits", augment=False), seed=0, split="search")
    assert plain.arch is not None and torch.equal(_all(plain.arch)[0], _all(plain.valid)[0])
    assert build_data(DataConfig(dataset="digits"), seed=0).arch is None  # no search split, no alpha batches


def test_len_counts_the_batches_and_drops_a_lone_last_example() -> None:
    x, y = torch.zeros(65, 1, 4, 4), torch.zeros(65, dtype=torch.int64)
    shuffled = TensorSource(x, y, 32, scale=1.0, mean=(0.0,), std=(1.0,), shuffle=True)
    ordered = TensorSource(x, y, 32, scale=1.0, mean=(0.0,), std=(1.0,))
    assert len(shuffled) == len(list(shuffled)) == 2  # a batch of one would break BatchNorm
    assert len(ordered) == len(list(ordered)) == 3 and sum(len(b[1]) for b in ordered) == 65


def test_digits_pixels_0_to_16_are_scaled_to_0_to_1() -> None:
    """scikit-learn's digits hold integers 0..16: normalised back, the training pixels are multiples of 1/16 from
    0 to 1, both ends present."""
    d = build_data(DataConfig(dataset="digits", augment=False), seed=0)
    x, _ = _all(d.train)
    raw = (x * d.std[0] + d.mean[0]) * 16
    assert torch.allclose(raw, raw.round(), atol=1e-4)
    assert raw.min().item() == pytest.approx(0.0, abs=1e-4) and raw.max().item() == pytest.approx(16.0, abs=1e-4)


def test_the_two_halves_of_a_search_split_are_shuffled_apart(tmp_path) -> None:
    """Equal halves of one seed: the weights' half and the validation half each follow a generator of their own, so
    their batches do not walk their images in the same order."""
    n = 64
    images = np.random.default_rng(0).integers(0, 256, (n, 4, 4, 1), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", images=images, labels=np.arange(n))
    np.savez(tmp_path / "b.npz", images=images[:8], labels=np.arange(8))
    cfg = DataConfig(dataset="npz", root=str(tmp_path / "a.npz"), test_root=str(tmp_path / "b.npz"), batch_size=8)
    d = build_data(cfg, seed=0, split="search")
    assert isinstance(d.train, TensorSource) and isinstance(d.valid, TensorSource)
    assert d.train.num_examples == d.valid.num_examples == 32

    def walk(src: TensorSource) -> list[int]:  # the stored position of each example in the order of the batches
        where = {int(label): i for i, label in enumerate(src.labels)}
        return [where[int(label)] for label in _all(src)[1]]

    assert sorted(walk(d.train)) == list(range(32)) and walk(d.train) != walk(d.valid)


def test_sources_of_one_seed_and_other_streams_shuffle_apart() -> None:
    x, y = torch.zeros(50, 1, 2, 2), torch.arange(50)
    a, b = (TensorSource(x, y, 10, scale=1.0, mean=(0.0,), std=(1.0,), shuffle=True, seed=3, stream=s) for s in (1, 2))
    assert not torch.equal(_all(a)[1], _all(b)[1])


def test_a_portion_that_leaves_no_validation_image_is_refused() -> None:
    """round(0.9999 * 1438) = 1438: every digit would train and none validate."""
    with pytest.raises(ConfigError, match=r"data.train_portion = 0.9999 of 1438 training images leaves one side empty"):
        build_data(DataConfig(dataset="digits", train_portion=0.9999), seed=0, split="search")
    keep, held = search_split(10, 0.87, seed=0)  # round(8.7) = 9
    assert (len(keep), len(held)) == (9, 1)


@pytest.mark.parametrize(("n", "batches", "last"), [(1, 1, 1), (2, 1, 2), (33, 1, 32), (66, 3, 2)])
def test_a_shuffled_epoch_drops_only_a_lone_last_example(n: int, batches: int, last: int) -> None:
    """A last batch of 1 is dropped (BatchNorm), unless it is the epoch's only batch; a last batch of 2 is kept."""
    src = TensorSource(torch.zeros(n, 1, 2, 2), torch.arange(n), 32, scale=1.0, mean=(0.0,), std=(1.0,), shuffle=True)
    sizes = [len(y) for _, y in src]
    assert len(src) == len(sizes) == batches and sizes[-1] == last


def test_derived_seeds_are_non_negative_63_bit_ints() -> None:
    """Seeds fit a signed 64-bit int (numpy, torch, a JSON reader): below 2**63, yet spread over the whole range."""
    seeds = [derive_seed(s, k, e) for s in range(4) for k in range(1, 5) for e in range(8)]
    assert all(isinstance(s, int) and 0 <= s < 2**63 for s in seeds)
    assert max(seeds) >= 2**62 and len(set(seeds)) == len(seeds)


# -- augmentation -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [4, 5])
def test_cutout_zeroes_one_square_of_the_right_size(length: int) -> None:
    side = 16
    out = cutout(torch.ones(256, 3, side, side), length, torch.Generator().manual_seed(0))
    assert torch.equal(out == 0, (out == 0)[:, :1].expand_as(out))  # the same hole in every channel
    full = 0
    for hole in (out[:, 0] == 0).unbind():
        ys, xs = torch.nonzero(hole, as_tuple=True)
        top, bottom, left, right = ys.min(), ys.max(), xs.min(), xs.max()
        h, w = int(bottom - top + 1), int(right - left + 1)
        assert len(ys) == h * w  # one filled rectangle
        assert h == length or top == 0 or bottom == side - 1  # shorter only where clipped at the border
        assert w == length or left == 0 or right == side - 1
        full += h == w == length
    assert full > 100  # most centres are far enough from the border for a whole square


def test_cutout_through_a_source_on_a_constant_image() -> None:
    x, y = torch.full((64, 1, 12, 12), 3.0), torch.zeros(64, dtype=torch.int64)
    src = TensorSource(x, y, 64, scale=1.0, mean=(1.0,), std=(2.0,), shuffle=True, augment=Augment(cutout=6))
    batch, _ = next(iter(src))
    zeros = (batch == 0).sum(dim=(1, 2, 3))
    assert zeros.max() == 36 and zeros.min() >= 9  # a 6x6 hole, at least 3x3 in a corner
    assert torch.all((batch == 0) | (batch == 1.0))  # (3 - 1) / 2 elsewhere


def test_random_crop_shifts_with_zero_padding() -> None:
    H = W = 8
    pad = 2
    x = (1 + torch.arange(H * W, dtype=torch.float32)).view(1, 1, H, W).repeat(256, 1, 1, 1)
    out = random_crop(x, pad, torch.Generator().manual_seed(0))
    shifts = set()
    for img in out[:, 0]:
        i, j = (int(v) for v in torch.nonzero(img)[0])  # first kept pixel
        r, c = divmod(int(img[i, j]) - 1, W)  # where it came from
        dy, dx = r - i, c - j
        assert -pad <= dy <= pad and -pad <= dx <= pad
        expected = torch.zeros(H, W)
        expected[max(0, -dy) : H - max(0, dy), max(0, -dx) : W - max(0, dx)] = x[
            0, 0, max(0, dy) : H - max(0, -dy), max(0, dx) : W - max(0, -dx)
        ]
        assert torch.equal(img, expected)
        shifts.add((dy, dx))
    assert shifts == {(dy, dx) for dy in range(-pad, pad + 1) for dx in range(-pad, pad + 1)}  # the far corners too


@pytest.mark.parametrize("length", [4, 5])
def test_cutout_centre_is_uniform_over_every_pixel(length: int) -> None:
    """Each image's hole is centred on its own pixel drawn uniformly over the whole image (rows 0..H-1, columns
    0..W-1), the square spanning centre - length // 2 to centre - length // 2 + length - 1, clipped at the border."""
    B, H, W = 3000, 6, 10
    hole = cutout(torch.ones(B, 1, H, W), length, torch.Generator().manual_seed(0))[:, 0] == 0  # (B, H, W)

    def extents(covered: torch.Tensor, side: int) -> Counter:  # covered (B, side): (first, last + 1) per image
        first = covered.float().argmax(1)
        end = side - covered.flip(1).float().argmax(1)
        return Counter(zip(first.tolist(), end.tolist()))

    for covered, side in ((hole.any(2), H), (hole.any(1), W)):
        expected = {(max(0, c - length // 2), min(side, c - length // 2 + length)) for c in range(side)}
        counts = extents(covered, side)
        assert set(counts) == expected, (sorted(counts), sorted(expected))
        assert min(counts.values()) > 0.7 * B / side and max(counts.values()) < 1.3 * B / side, counts


def test_random_flip_mirrors_some_images_left_right() -> None:
    x = torch.arange(400 * 2 * 3 * 5, dtype=torch.float32).view(400, 2, 3, 5)
    out = random_flip(x, torch.Generator().manual_seed(0))
    kept = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(3)).flatten(1).all(1)
    assert torch.all(kept ^ mirrored)  # each image whole or mirrored left-right, never upside down
    assert 150 < int(mirrored.sum()) < 250  # p = 0.5


def test_a_source_keeps_labels_with_their_images_and_augments_each_on_its_own() -> None:
    """Shuffled, flipped batches: image j is example y[j] normalised, whole or mirrored; both occur."""
    x = torch.arange(200 * 2 * 4 * 4, dtype=torch.float32).view(200, 2, 4, 4) % 97
    src = TensorSource(
        x, torch.arange(200), 64, scale=96.0, mean=(0.5, 0.25), std=(0.5, 2.0), shuffle=True, augment=Augment(flip=True)
    )
    out, y = _all(src)
    assert sorted(y.tolist()) == list(range(200)) and y.tolist() != list(range(200))
    plain = (x[y] / 96.0 - torch.tensor([0.5, 0.25]).view(1, 2, 1, 1)) / torch.tensor([0.5, 2.0]).view(1, 2, 1, 1)
    kept = torch.isclose(out, plain).flatten(1).all(1)
    mirrored = torch.isclose(out, plain.flip(3)).flatten(1).all(1)
    assert torch.all(kept | mirrored) and 50 < int(mirrored.sum()) < 150


def test_augmentation_order_crop_on_black_then_normalise_then_cut_out() -> None:
    """A white image, mean 0.5, std 0.25: the image is (1 - 0.5) / 0.25 = 2, the crop's black padding (0 - 0.5) /
    0.25 = -2 (padded before normalisation), the cutout hole 0 (cut after it)."""
    x, y = torch.ones(128, 3, 8, 8), torch.zeros(128, dtype=torch.int64)
    aug = Augment(crop_pad=2, flip=True, cutout=3)
    src = TensorSource(x, y, 128, scale=1.0, mean=(0.5,) * 3, std=(0.25,) * 3, shuffle=True, augment=aug)
    out, _ = next(iter(src))
    values = set(out.unique().tolist())
    assert values == {-2.0, 0.0, 2.0}, values


def test_digits_are_never_flipped_and_evaluation_is_plain() -> None:
    d = build_data(DataConfig(dataset="digits", cutout=3), seed=0)
    assert isinstance(d.train, TensorSource) and isinstance(d.test, TensorSource)
    assert d.train.augment == Augment(crop_pad=1, flip=False, cutout=3)
    assert d.test.augment is None and not d.test.shuffle
    whole_hole = build_data(DataConfig(dataset="digits", cutout=8), seed=0)  # a hole as big as the image is allowed
    assert whole_hole.train.num_examples == 1438
    plain = build_data(DataConfig(dataset="digits", augment=False), seed=0).test
    assert _same(_first(d.test), _first(plain))


def test_with_batch_size_rebatches_the_same_pass() -> None:
    x = torch.arange(40, dtype=torch.float32).view(40, 1, 1, 1)
    src = TensorSource(x, torch.arange(40), 16, scale=1.0, mean=(0.0,), std=(1.0,), shuffle=True, seed=2)
    small = with_batch_size(src, 5)
    assert src.batch_size == 16 and len(small) == 8 and all(len(y) == 5 for _, y in small)
    assert torch.equal(_all(small)[1], _all(src)[1])  # the same order, cut finer


def test_resize_rounds_uint8_as_a_pil_resize() -> None:
    image = torch.tensor([[0, 3], [0, 0]], dtype=torch.uint8).view(1, 1, 2, 2)  # averages to 0.75
    assert resize(image, 1).tolist() == [[[[1]]]] and resize(image.float(), 1).item() == pytest.approx(0.75)


@pytest.mark.parametrize("p", [0.5, 0.2])
def test_random_flip_mirrors_each_image_with_probability_p(p: float) -> None:
    """Over 4000 images (binomial std under 0.008) the mirrored share is p to within 0.03."""
    x = torch.tensor([0.0, 1.0]).view(1, 1, 1, 2).repeat(4000, 1, 1, 1)
    out = random_flip(x, torch.Generator().manual_seed(0), p=p)
    assert abs((out[:, 0, 0, 0] == 1.0).float().mean().item() - p) < 0.03


def test_resize_matches_a_pil_bilinear_resize() -> None:
    """Down (antialiased) and up, chunk by chunk: each uint8 image within one grey level of PIL's bilinear resize."""
    from PIL import Image

    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    for size in (12, 45):
        ours = resize(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()), size, chunk=2)
        pil = [np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.BILINEAR)) for im in images]
        assert ours.dtype == torch.uint8 and ours.shape == (5, 3, size, size)
        diff = np.abs(ours.numpy().astype(int) - np.stack(pil).transpose(0, 3, 1, 2).astype(int))
        assert diff.max() <= 1, (size, diff.max())


def test_channel_stats_are_the_population_mean_and_std_of_every_chunk() -> None:
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (7, 2, 5, 3), dtype=np.uint8))
    mean, std = channel_stats(images, 255.0, chunk=3)
    values = images.numpy().transpose(1, 0, 2, 3).reshape(2, -1) / 255.0
    assert np.allclose(mean, values.mean(1), atol=1e-12) and np.allclose(std, values.std(1), atol=1e-12)


def test_a_nearly_constant_channel_is_centred_not_scaled() -> None:
    """Alpha 255 but for one pixel of 254 (std ~8e-5 in 0..1 units): left unscaled, as a constant channel is."""
    images = torch.full((40, 1, 8, 8), 255, dtype=torch.uint8)
    images[0, 0, 0, 0] = 254
    mean, std = channel_stats(images, 255.0)
    assert std == (1.0,) and mean[0] == pytest.approx(1.0, abs=1e-5)


# -- npz, CIFAR, ImageNet -----------------------------------------------------------------------------------------


def test_npz_cifar_files() -> None:
    train, test = shared_file("cifar10-train-10k.npz"), shared_file("cifar10-test-2k.npz")
    cfg = DataConfig(dataset="npz", root=str(train), test_root=str(test), limit_train=500, limit_test=300)
    d = build_data(cfg, seed=0, split="search")
    assert (d.num_classes, d.in_channels, d.image_size) == (10, 3, 32)
    assert d.valid is not None and (d.train.num_examples, d.valid.num_examples, d.test.num_examples) == (250, 250, 300)
    # training-set statistics of a JPEG export of CIFAR-10 are close to the usual constants
    assert np.allclose(d.mean, (0.4914, 0.4822, 0.4465), atol=0.01)
    assert np.allclose(d.std, (0.2470, 0.2435, 0.2616), atol=0.01)
    x, y = next(iter(d.train))
    assert x.shape == (64, 3, 32, 32) and len(set(y.tolist())) >= 8  # sorted rows were shuffled before limiting
    assert len(set(next(iter(d.test))[1].tolist())) == 10  # and the test set is mixed too
    other = build_data(cfg, seed=3)
    assert torch.equal(_all(other.test)[1], _all(d.test)[1])


def test_npz_holdout_and_resize(tmp_path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (100, 10, 10, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(4), 25)  # sorted by class
    path = tmp_path / "tiny.npz"
    np.savez(path, images=images, labels=labels)
    d = build_data(DataConfig(dataset="npz", root=str(path), test_portion=0.2, image_size=16), seed=0)
    assert (d.train.num_examples, d.test.num_examples, d.num_classes, d.image_size) == (80, 20, 4, 16)
    x, y = _all(d.test)
    assert x.shape == (20, 3, 16, 16) and torch.equal(torch.bincount(y), torch.full((4,), 5))
    assert np.allclose(d.mean, images.mean(axis=(0, 1, 2)) / 255, atol=0.02)
    np.savez(path, images=images, labels=labels, classes=np.array(list("abcdef")))  # 6 names, labels 0..3 only
    assert build_data(DataConfig(dataset="npz", root=str(path)), seed=0).num_classes == 6


def test_npz_images_are_channels_last_and_normalised_with_training_statistics(tmp_path) -> None:
    """(N, H, W, C) float rows become (N, C, H, W) pixel for pixel, normalised by the per-channel mean and population
    std of the training file alone (in 0..1 units); the 32-pixel training set crops with padding 4 and flips."""
    rng = np.random.default_rng(0)
    train = rng.random((30, 32, 32, 3)).astype(np.float32) * np.array([0.5, 0.3, 0.8], dtype=np.float32)
    test = 0.5 + 0.5 * rng.random((6, 32, 32, 3)).astype(np.float32)  # brighter: statistics must not include it
    np.savez(tmp_path / "train.npz", images=train, labels=np.arange(30))
    np.savez(tmp_path / "test.npz", images=test, labels=np.arange(6))
    cfg = DataConfig(dataset="npz", root=str(tmp_path / "train.npz"), test_root=str(tmp_path / "test.npz"))
    d = build_data(cfg, seed=0)
    mean, std = train.mean(axis=(0, 1, 2), dtype=np.float64), train.std(axis=(0, 1, 2), dtype=np.float64)
    assert np.allclose(d.mean, mean, atol=1e-6) and np.allclose(d.std, std, atol=1e-6)
    x, y = _all(d.test)
    expected = (test[y.numpy()].transpose(0, 3, 1, 2) - mean[:, None, None]) / std[:, None, None]
    assert np.allclose(x.numpy(), expected, atol=1e-5)
    assert isinstance(d.train, TensorSource) and d.train.augment == Augment(crop_pad=4, flip=True, cutout=0)


def test_labels_stay_with_their_images_through_holdout_limit_and_split(tmp_path) -> None:
    """Rows sorted by class, each image filled with 20 * its label + 10: every batch of every part of a search split
    (held-out test share, limited training set, both halves) pairs each image with its own label."""
    labels = np.repeat(np.arange(5), 20)
    images = np.broadcast_to((20 * labels + 10).astype(np.uint8)[:, None, None, None], (100, 8, 8, 3)).copy()
    np.savez(tmp_path / "sorted.npz", images=images, labels=labels)
    cfg = DataConfig(dataset="npz", root=str(tmp_path / "sorted.npz"), limit_train=60, batch_size=16, cutout=2)
    d = build_data(cfg, seed=3, split="search")
    assert d.valid is not None and d.arch is not None
    for part in (d.train, d.valid, d.arch, d.test):
        x, y = _all(part)
        # three pixels a 1-pixel crop never pads, of which a 2x2 hole covers at most one: their median is the image's
        value = x[:, 0, [2, 2, 5], [2, 5, 2]].median(dim=1).values * d.std[0] * 255 + d.mean[0] * 255
        assert torch.allclose(value, 20.0 * y + 10, atol=1e-3), (value[:8], y[:8])
        assert len(set(y.tolist())) > 1


@pytest.mark.parametrize(
    ("dataset", "cls", "folder", "mean", "std"),
    [
        ("cifar10", "CIFAR10", "cifar-10-batches-py", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
        ("cifar100", "CIFAR100", "cifar-100-python", (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    ],
)
def test_cifar_pixels_keep_their_place_and_constants(monkeypatch, tmp_path, dataset, cls, folder, mean, std) -> None:
    """torchvision's (N, 32, 32, 3) uint8 rows become (N, 3, 32, 32), normalised with the dataset's constants."""
    import torchvision

    data = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)

    class FakeCIFAR:
        def __init__(self, root: str, train: bool, download: bool) -> None:
            self.data, self.targets = data, [3, 1, 4, 1, 5, 9, 2, 6]

    monkeypatch.setattr(torchvision.datasets, cls, FakeCIFAR)
    (tmp_path / folder).mkdir()
    d = build_data(DataConfig(dataset=dataset, root=str(tmp_path), augment=False), seed=0)
    assert (d.mean, d.std) == (mean, std)
    x, y = _all(d.test)
    expected = (data.transpose(0, 3, 1, 2) / 255 - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    assert y.tolist() == [3, 1, 4, 1, 5, 9, 2, 6] and np.allclose(x.numpy(), expected, atol=1e-5)


def test_cifar_through_torchvision(monkeypatch, tmp_path) -> None:
    import torchvision

    class FakeCIFAR10:
        def __init__(self, root: str, train: bool, download: bool) -> None:
            n = 40 if train else 10
            self.data = np.full((n, 32, 32, 3), 255, dtype=np.uint8)
            self.data[..., 1] = 0  # green channel black
            self.targets = [i % 10 for i in range(n)]

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    (tmp_path / "cifar-10-batches-py").mkdir()
    d = build_data(DataConfig(dataset="cifar10", root=str(tmp_path), augment=False), seed=0)
    assert (d.num_classes, d.in_channels, d.image_size, d.mean) == (10, 3, 32, (0.4914, 0.4822, 0.4465))
    x, y = next(iter(d.test))
    assert x.shape == (10, 3, 32, 32) and y.tolist() == list(range(10))
    assert x[0, :, 0, 0].tolist() == pytest.approx([(1 - 0.4914) / 0.247, -0.4822 / 0.2435, (1 - 0.4465) / 0.2616])


def _image_folder(root: Path, per_class: int) -> None:
    from PIL import Image

    for c, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
        folder = root / f"n0{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (40 + i, 36), colour).save(folder / f"{i}.png")


def test_imagenet_folders(tmp_path) -> None:
    _image_folder(tmp_path / "train", 5)
    _image_folder(tmp_path / "val", 2)
    cfg = DataConfig(dataset="imagenet", root=str(tmp_path), image_size=24, batch_size=4, eval_batch_size=8)
    d = build_data(cfg, seed=0, split="search")
    assert (d.num_classes, d.in_channels, d.image_size) == (2, 3, 24)
    assert d.valid is not None and (d.train.num_examples, d.valid.num_examples, d.test.num_examples) == (5, 5, 4)
    assert d.arch is not None and d.arch.num_examples == 5
    x, y = next(iter(d.test))
    assert x.shape == (4, 3, 24, 24) and y.tolist() == [0, 0, 1, 1]
    assert x[0, 0].mean() > 1.5 and x[2, 2].mean() > 1.5  # red, then blue, normalised
    a = _first(build_data(cfg, seed=0, split="search").train)
    assert _same(_first(d.train), a)
    d.train.set_epoch(1)
    assert not _same(_first(d.train), a)
    (tmp_path / "other" / "train").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"ImageNet folder '.*other/val' does not exist"):
        build_data(DataConfig(dataset="imagenet", root=str(tmp_path / "other")), seed=0)


def test_imagenet_transforms_per_image_epoch_and_half(tmp_path) -> None:
    """Evaluation: resize to 256/224 of the side, centre crop, ImageNet normalisation; training draws each image's
    transform from (seed, stream, epoch, index), so two copies of one file differ and so do two epochs, then cuts out;
    the validation half is plain (the same tensors every epoch) and the alphas' half augmented."""
    from PIL import Image

    framed = np.zeros((64, 64, 3), dtype=np.uint8)
    framed[1:-1, 1:-1] = (255, 0, 0)  # red inside a 1-pixel black frame that a 256/224 centre crop removes
    for part, n in (("train", 4), ("val", 2)):
        for c in range(2):
            (tmp_path / part / f"n0{c}").mkdir(parents=True)
            for i in range(n):
                Image.fromarray(framed).save(tmp_path / part / f"n0{c}" / f"{i}.png")
    cfg = DataConfig(dataset="imagenet", root=str(tmp_path), image_size=16, batch_size=8, cutout=4, limit_test=3)
    d = build_data(cfg, seed=0, split="search")
    assert d.valid is not None and d.arch is not None
    x, _ = _all(d.test)
    red = torch.tensor([(1 - 0.485) / 0.229, -0.456 / 0.224, -0.406 / 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(x, red.expand_as(x), atol=1e-5), (x - red).abs().max()
    test_labels = [_all(build_data(cfg, seed=s).test)[1].tolist() for s in range(5)]
    assert x.shape[0] == 3 and all(t == test_labels[0] for t in test_labels)  # limit_test ignores the seed

    def differ_outside_holes(a: torch.Tensor, b: torch.Tensor) -> bool:
        return bool(((a != b) & (a != 0) & (b != 0)).any())

    train_x, _ = _all(d.train)
    assert differ_outside_holes(train_x[0], train_x[1])  # copies of one file, each its own crop and jitter
    holes = (train_x == 0).all(1).flatten(1).sum(1)  # (B,) pixels zero in every channel
    assert torch.all(holes >= 4), holes  # a 4x4 hole, at least 2x2 where clipped
    d.train.set_epoch(1)
    assert differ_outside_holes(_all(d.train)[0][0], train_x[0])
    valid = _sorted_rows(_all(d.valid)[0])
    d.valid.set_epoch(1)
    assert _sorted_rows(_all(d.valid)[0]) == valid  # plain: the same images, reordered
    assert _sorted_rows(_all(d.arch)[0]) != valid


def test_npz_grayscale_images_get_one_channel(tmp_path) -> None:
    """(N, H, W) images are (N, 1, H, W), pixel for pixel."""
    images = np.random.default_rng(0).integers(0, 256, (10, 6, 6), dtype=np.uint8)
    np.savez(tmp_path / "gray.npz", images=images, labels=np.arange(10))
    np.savez(tmp_path / "gray-test.npz", images=images[:4], labels=np.arange(4))
    cfg = DataConfig(dataset="npz", root=str(tmp_path / "gray.npz"), test_root=str(tmp_path / "gray-test.npz"))
    d = build_data(cfg, seed=0)
    assert (d.in_channels, d.image_size, len(d.mean)) == (1, 6, 1)
    x, y = _all(d.test)
    assert np.allclose(x[:, 0].numpy() * d.std[0] + d.mean[0], images[y.numpy()] / 255, atol=1e-5)


def test_npz_rows_grouped_by_class_are_mixed(tmp_path) -> None:
    """A test file sorted by class, and a held-out share of a sorted training file, come out in mixed order."""
    labels = np.repeat(np.arange(4), 10)
    images = np.zeros((40, 4, 4), dtype=np.uint8)
    np.savez(tmp_path / "sorted.npz", images=images, labels=labels)
    for test_root in (str(tmp_path / "sorted.npz"), ""):
        cfg = DataConfig(dataset="npz", root=str(tmp_path / "sorted.npz"), test_root=test_root, test_portion=0.5)
        y = _all(build_data(cfg, seed=0).test)[1].tolist()
        assert sorted(y) != y and len(set(y[:8])) > 1, y


def test_npz_test_file_must_match_the_training_images(tmp_path) -> None:
    train = tmp_path / "train.npz"
    np.savez(train, images=np.zeros((4, 8, 8, 3), dtype=np.uint8), labels=np.arange(4))
    for name, images, held in (
        ("small", np.zeros((4, 6, 6, 3), np.uint8), r"uint8 images \(6, 6, 3\)"),
        ("float", np.zeros((4, 8, 8, 3), np.float64), r"float images \(8, 8, 3\)"),
    ):
        np.savez(tmp_path / f"{name}.npz", images=images, labels=np.arange(4))
        cfg = DataConfig(dataset="npz", root=str(train), test_root=str(tmp_path / f"{name}.npz"))
        message = rf"npz file '[^']*{name}\.npz' holds {held} but '[^']*train\.npz' holds uint8 images \(8, 8, 3\)$"
        with pytest.raises(ConfigError, match=message):
            build_data(cfg, seed=0)


def test_npz_non_square_images_need_an_image_size(tmp_path) -> None:
    path = tmp_path / "wide.npz"
    np.savez(path, images=np.zeros((10, 6, 8, 3), dtype=np.uint8), labels=np.arange(10) % 2)
    with pytest.raises(ConfigError, match=r"has \(6, 8\) images; set data.image_size"):
        build_data(DataConfig(dataset="npz", root=str(path)), seed=0)
    d = build_data(DataConfig(dataset="npz", root=str(path), image_size=8), seed=0)
    assert d.image_size == 8 and next(iter(d.test))[0].shape[1:] == (3, 8, 8)


def test_cifar_download_needs_no_folder_and_reaches_torchvision(monkeypatch, tmp_path) -> None:
    import torchvision

    calls = []

    class FakeCIFAR10:
        def __init__(self, root: str, train: bool, download: bool) -> None:
            calls.append((root, train, download))
            self.data, self.targets = np.zeros((4, 32, 32, 3), dtype=np.uint8), [0, 1, 2, 3]

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    d = build_data(DataConfig(dataset="cifar10", root=str(tmp_path), download=True), seed=0)
    assert d.test.num_examples == 4 and calls == [(str(tmp_path), True, True), (str(tmp_path), False, True)]


def test_describe_without_loading_gives_the_built_shape() -> None:
    """Digits' known shape is what building them gives (1797 - 359 held out = 1438 training images); the named
    datasets' known shapes follow image_size and limit_train."""
    for cfg in (DataConfig(dataset="digits"), DataConfig(dataset="digits", limit_train=300, image_size=12)):
        assert describe(cfg, check=False) == describe(cfg)
    cifar = describe(DataConfig(dataset="cifar10", limit_train=500, image_size=40), check=False)
    assert (cifar.num_classes, cifar.in_channels, cifar.side, cifar.num_train) == (10, 3, 40, 500)
    imagenet = describe(DataConfig(dataset="imagenet", root="/nowhere"))
    assert (imagenet.num_classes, imagenet.side, imagenet.num_train) == (1000, 224, 1_281_167)


def test_imagenet_training_images_are_colour_jittered(tmp_path) -> None:
    """Crops and flips of a one-colour image keep it one colour; the DARTS colour jitter (brightness, contrast,
    saturation 0.4, hue 0.2) moves it off the file's colour. augment=False: the file's colour, as evaluation."""
    _image_folder(tmp_path / "train", 4)
    _image_folder(tmp_path / "val", 1)
    cfg = DataConfig(dataset="imagenet", root=str(tmp_path), image_size=8, batch_size=8)
    plain = _all(build_data(cfg, seed=0).test)[0][:, :, 0, 0]  # (2, 3): red, blue normalised
    x, y = _all(build_data(cfg, seed=0).train)
    assert torch.allclose(x, x[:, :, :1, :1].expand_as(x), atol=1e-5)  # each image one colour
    moved = (x[:, :, 0, 0] - plain[y]).abs().amax(1)
    assert (moved > 0.1).sum() >= 6, moved
    x, y = _all(build_data(replace(cfg, augment=False), seed=0).train)
    assert torch.allclose(x, plain[y][:, :, None, None].expand_as(x), atol=1e-5)


def test_imagenet_whole_training_set_validates_on_the_val_folder(tmp_path) -> None:
    _image_folder(tmp_path / "train", 3)
    _image_folder(tmp_path / "val", 2)
    cfg = DataConfig(dataset="imagenet", root=str(tmp_path), image_size=8, train_portion=1.0)
    d = build_data(cfg, seed=0, split="search")
    assert d.valid is not None and d.arch is None
    assert (d.train.num_examples, d.valid.num_examples) == (6, 4)
    assert sorted(_all(d.valid)[1].tolist()) == [0, 0, 1, 1]


# -- errors -------------------------------------------------------------------------------------------------------


def test_missing_cifar_root_names_the_path(tmp_path) -> None:
    with pytest.raises(ConfigError, match=rf"CIFAR-10 not found under '{tmp_path}' \(expected cifar-10-batches-py/"):
        build_data(DataConfig(dataset="cifar10", root=str(tmp_path)), seed=0)
    (tmp_path / "cifar-100-python").mkdir()
    with pytest.raises(ConfigError, match=rf"CIFAR-100 under '{tmp_path}' could not be loaded"):
        build_data(DataConfig(dataset="cifar100", root=str(tmp_path)), seed=0)


def test_npz_errors_name_the_path_and_key(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"npz file '/nonexistent/x\.npz' does not exist"):
        build_data(DataConfig(dataset="npz", root="/nonexistent/x.npz"), seed=0)
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((4, 8, 8, 3), dtype=np.uint8), extra=np.zeros(2))
    with pytest.raises(ConfigError, match=rf"npz file '{bad}' lacks key 'labels' \(has: images, extra\)"):
        build_data(DataConfig(dataset="npz", root=str(bad)), seed=0)
    with pytest.raises(ConfigError, match=r"needs data\.root"):
        build_data(DataConfig(dataset="npz"), seed=0)


def test_npz_images_that_are_not_finite_are_refused(tmp_path) -> None:
    images = np.random.default_rng(0).random((6, 8, 8, 3)).astype(np.float32)
    images[2, 3, 4, 1] = np.nan
    images[5, 0, 0, 0] = np.inf
    bad = tmp_path / "nan.npz"
    np.savez(bad, images=images, labels=np.arange(6) % 2)
    with pytest.raises(ConfigError, match=rf"npz file '{bad}': images hold 2 NaN or infinite values"):
        build_data(DataConfig(dataset="npz", root=str(bad)), seed=0)


def test_a_constant_channel_is_centred_not_scaled(tmp_path) -> None:
    """An RGBA file whose alpha is 255 everywhere: that channel's std is 0; dividing by a clamped ~0 sent a crop's
    zero padding to -1e6. It is centred and left unscaled: every value of it, padding included, stays in [-1, 1]."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 8, 8, 4), dtype=np.uint8)
    images[..., 3] = 255
    path = tmp_path / "rgba.npz"
    np.savez(path, images=images, labels=np.arange(40) % 4)
    splits = build_data(DataConfig(dataset="npz", root=str(path), batch_size=40), seed=0)
    assert splits.std[3] == 1.0 and splits.mean[3] == pytest.approx(1.0)
    assert all(0.2 < s < 0.4 for s in splits.std[:3])  # the random channels keep their own std
    splits.train.set_epoch(0)
    x, _ = next(iter(splits.train))  # augmented: random crops pad with zeros
    assert x[:, 3].abs().max() <= 1.0 + 1e-6


def test_unknown_dataset_lists_valid_names() -> None:
    with pytest.raises(ConfigError, match="unknown dataset 'mnist'; valid: digits, cifar10, cifar100, imagenet, npz"):
        build_data(DataConfig(dataset="mnist"), seed=0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"train_portion": 1.5}, r"data.train_portion = 1.5 must lie in \(0, 1\]"),
        ({"train_portion": 0.0}, r"data.train_portion = 0.0 must lie in \(0, 1\]"),
        ({"test_portion": 0.0}, r"data.test_portion = 0.0 must lie strictly between 0 and 1"),
        ({"test_portion": 1.0}, r"data.test_portion = 1.0 must lie strictly between 0 and 1"),
        ({"cutout": -1}, r"data.cutout = -1 must be >= 0"),
        ({"image_size": -1}, r"data.image_size = -1 must be >= 0"),
        ({"limit_test": -2}, r"data.limit_test = -2 must be >= 0"),
        ({"batch_size": 0}, r"data.batch_size = 0 must be >= 1"),
        ({"eval_batch_size": 0}, r"data.eval_batch_size = 0 must be >= 1"),
        ({"cutout": 9}, r"data.cutout = 9 exceeds the image side 8"),
    ],
)
def test_bad_values_raise_config_errors(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_data(DataConfig(dataset="digits", **change), seed=0)


def test_unknown_split_and_negative_seed_raise() -> None:
    with pytest.raises(ConfigError, match="unknown data split 'valid'; valid: train, search"):
        build_data(DataConfig(), seed=0, split="valid")
    with pytest.raises(ConfigError, match="seed = -1 must be >= 0"):
        build_data(DataConfig(), seed=-1)


def _damaged_npz(tmp_path: Path, kind: str) -> Path:
    images, labels = np.zeros((4, 8, 8), dtype=np.uint8), np.arange(4)
    path = tmp_path / f"{kind}.npz"
    if kind == "truncated":
        np.savez(path, images=images, labels=labels)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "corrupt":
        np.savez_compressed(path, images=np.arange(4 * 64, dtype=np.uint8).reshape(4, 8, 8), labels=labels)
        damaged = bytearray(path.read_bytes())
        damaged[100:140] = b"\x00" * 40
        path.write_bytes(bytes(damaged))
    elif kind == "object-images":
        np.savez(path, images=np.array([images[0], "x"], dtype=object), labels=labels)
    elif kind == "object-labels":
        np.savez(path, images=images, labels=np.array([0, "a", None, 1], dtype=object))
    elif kind == "scalar-classes":
        np.savez(path, images=images, labels=labels, classes=np.array(4))
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("truncated", "is damaged or not an .npz"),
        ("corrupt", "is damaged: 'images' could not be read"),
        ("object-images", "'images' is an array of Python objects; expected images"),
        ("object-labels", "'labels' is an array of Python objects; expected labels"),
        ("scalar-classes", r"classes must be a 1-d array of class names \(K,\), got shape \(\)"),
    ],
)
def test_a_damaged_npz_is_one_line_naming_the_file(tmp_path, kind: str, message: str) -> None:
    path = _damaged_npz(tmp_path, kind)
    with pytest.raises(ConfigError, match=message) as err:
        build_data(DataConfig(dataset="npz", root=str(path)), seed=0)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("labels", "classes", "message"),
    [
        ([0, 0, 1, 1, -1, -1, 2, 2], None, r"labels must be 8 non-negative ints, got \(8,\)"),
        ([0, 0, 1, 1, 2, 2, 3, 3], ["a", "b", "c"], r"names 3 classes but has label 3"),
    ],
)
def test_npz_labels_outside_the_classes_are_refused(tmp_path, labels, classes, message) -> None:
    path = tmp_path / "bad.npz"
    arrays: dict[str, Any] = {"images": np.zeros((8, 8, 8), dtype=np.uint8), "labels": np.array(labels)}
    if classes is not None:
        arrays["classes"] = np.array(classes)
    np.savez(path, **arrays)
    with pytest.raises(ConfigError, match=message):
        build_data(DataConfig(dataset="npz", root=str(path), test_portion=0.5), seed=0)


def test_imagenet_errors(tmp_path) -> None:
    from PIL import Image

    with pytest.raises(ConfigError, match=r"data.dataset=imagenet needs data.root, the folder holding train/ and val/"):
        build_data(DataConfig(dataset="imagenet"), seed=0)
    _image_folder(tmp_path / "train", 1)
    _image_folder(tmp_path / "val", 1)
    with pytest.raises(ConfigError, match=r"data.cutout = 9 exceeds the image side 8; use at most 8"):
        build_data(DataConfig(dataset="imagenet", root=str(tmp_path), image_size=8, cutout=9), seed=0)
    (tmp_path / "val" / "n02").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "val" / "n02" / "0.png")  # a class that train/ lacks
    with pytest.raises(ConfigError, match=r"train/ and val/ hold different class folders"):
        build_data(DataConfig(dataset="imagenet", root=str(tmp_path)), seed=0)


@pytest.mark.parametrize("workers", [0, 1])
def test_an_unreadable_image_is_one_line_naming_the_file(workers: int, tmp_path) -> None:
    """A truncated or foreign file among the images: one line naming it, whether a loader worker or this process
    read it (a worker's error reaches here with its traceback as its text)."""
    _image_folder(tmp_path / "train", 2)
    _image_folder(tmp_path / "val", 1)
    bad = tmp_path / "val" / "n01" / "0.png"
    bad.write_text("not an image")
    cfg = DataConfig(dataset="imagenet", root=str(tmp_path), image_size=8, num_workers=workers)
    d = build_data(cfg, seed=0)
    with pytest.raises(ConfigError) as err:
        list(d.test)
    assert str(err.value) == f"image {str(bad)!r} cannot be read (UnidentifiedImageError); remove or replace it"
