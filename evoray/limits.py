"""Sizes a machine cannot hold, refused before a run starts: a population, a supernet or network (its channels and
cells) and a batch whose memory would exceed the device's, reported in one line with what they would need.

The estimates are coarse on purpose and err low (a run that fits by a factor of two is never refused); they exist
so that a typo such as ``init_channels=10**12`` gives a sentence, not minutes of work and an out-of-memory
traceback. Networks are counted on PyTorch's ``meta`` device, where building allocates nothing.

Example::

    check_supernet(SupernetConfig("darts", 16, 8), num_classes=10, in_channels=3, side=32, batch=64, device="cpu")
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import torch
from torch import nn

from evoray.errors import ConfigError
from evoray.nn.networks import build_network
from evoray.nn.supernet import SupernetConfig, build_supernet
from evoray.spaces import Genotype, get_space

FLOAT = 4  # bytes of a float32
TRAINING_COPIES = 4  # weights, gradients, momentum, and a checkpoint's copy
MAPS_PER_CELL = 16  # feature maps of C x side^2 kept per cell and sample for the backward pass (a low estimate)
HUGE = 1 << 20  # channels or cells beyond any machine: counted by formula, without building


def human(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if nbytes < 1024:
            return f"{nbytes:.3g} {unit}"
        nbytes /= 1024
    return f"{nbytes:.3g} PB"


def device_memory(device: str | torch.device = "cpu") -> int:
    """Bytes of memory of ``device`` (``auto``: the GPU if there is one): a GPU's, or this machine's RAM."""
    name = str(device)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(dev.index or 0).total_memory)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # no sysconf: assume a large machine
        return 1 << 40


def refuse_unless_fits(what: str, nbytes: float, device: str | torch.device = "cpu") -> None:
    have = device_memory(device)
    if nbytes > have:
        where = "this GPU" if "cuda" in str(device) else "this machine"
        raise ConfigError(f"{what} needs about {human(nbytes)} of memory; {where} has {human(have)}")


def parameter_count(build: Callable[[int], nn.Module], layers: int, probe: int = 3) -> float:
    """Parameters of ``build(layers)``, counted on the meta device; for many cells, extrapolated from two small
    builds (cells add parameters linearly at a fixed width), so that a huge count of cells costs nothing."""

    def count(n: int) -> int:
        with torch.device("meta"):
            return sum(p.numel() for p in build(n).parameters())

    if layers <= 4 * probe:
        return float(count(layers))
    small, large = count(probe), count(2 * probe)
    return small + (large - small) * (layers - probe) / probe


def check_population(population: int, generations: int, alpha_numel: int) -> None:
    """An evolve run keeps every individual of every generation (its alphas as Python floats) in memory."""
    need = float(population) * generations * alpha_numel * 64 + population * 4096
    refuse_unless_fits(f"evolution.population = {population} over {generations} generations", need)


def check_model(
    what: str,
    build: Callable[[int], nn.Module],
    layers: int,
    cells: int,
    channels: int,
    side: int,
    batch: int,
    device: str | torch.device,
) -> None:
    """A model built by ``build(layers)`` with ``cells`` cells in three stages (each reduction doubles the channels
    and halves the side, so a stage holds half the activations of the one before), at ``channels`` channels on
    ``side``-pixel images in training batches of ``batch``: its training copies of the weights, then the weights and
    the activations the backward pass keeps together."""
    if channels > HUGE or layers > HUGE:
        weights = float(channels) ** 2 * cells * FLOAT * TRAINING_COPIES
    else:
        weights = parameter_count(build, layers) * FLOAT * TRAINING_COPIES
    refuse_unless_fits(f"{what} (its weights)", weights, device)
    per_cell = MAPS_PER_CELL * float(channels) * side * side * FLOAT
    activations = float(batch) * per_cell * cells * (1 + 0.5 + 0.25) / 3
    refuse_unless_fits(f"{what} on training batches of {batch} {side}x{side} images", weights + activations, device)


def _shape_problem(model: nn.Module, in_channels: int, side: int, batch: int) -> str | None:
    """What goes wrong in a training forward pass of ``model`` (on the meta device: shapes only) on a batch of
    ``batch`` images of ``side`` pixels, or None."""
    try:
        with torch.no_grad():
            model(torch.empty(batch, in_channels, side, side, device="meta"))
    except (RuntimeError, ValueError, IndexError) as err:
        return str(err).splitlines()[0][:160] if str(err) else type(err).__name__
    return None


def check_shapes(what: str, build: Callable[[], nn.Module], in_channels: int, side: int, batch: int) -> None:
    """A model whose reductions (or BatchNorms) cannot take ``side``-pixel images in training batches of ``batch``:
    one line naming the setting to change, found by tracing a training step's forward pass on the meta device (shapes
    alone, no memory) before the run starts rather than by a worker's traceback after."""
    with torch.device("meta"):
        model = build().train()
    problem = _shape_problem(model, in_channels, side, batch)
    if problem is None:
        return
    if batch < 2 and _shape_problem(model, in_channels, side, 2) is None:
        raise ConfigError(
            f"training batches of {batch} image do not fit {what} ({problem}); use data.batch_size >= 2 and at least "
            "2 training images"
        )
    larger = range(side + 1, 2 * side + 17)
    fits = next((s for s in larger if _shape_problem(model, in_channels, s, batch) is None), None)
    hint = f"; the nearest larger side that fits is {fits}" if fits is not None else ""
    raise ConfigError(f"{side}x{side} images (data.image_size) do not fit {what} ({problem}){hint}")


def check_supernet(cfg: SupernetConfig, num_classes: int, in_channels: int, side: int, batch: int, device: str) -> None:
    """A search's supernet (``supernet.init_channels``, ``supernet.layers``) and its batch."""

    def build(layers: int) -> nn.Module:
        return build_supernet(dataclasses.replace(cfg, layers=layers), num_classes, in_channels, "softmax")

    cells = cfg.layers * (1 if get_space(cfg.space).family.num_inputs == 2 else 3)  # nb201: N cells per stage
    what = f"the supernet with supernet.init_channels = {cfg.init_channels}, supernet.layers = {cfg.layers}"
    check_model(what, build, cfg.layers, cells, cfg.init_channels, side, batch, device)
    check_shapes(what, lambda: build(cfg.layers), in_channels, side, batch)


def check_network(
    genotype: Genotype,
    network: str,
    channels: int,
    layers: int,
    auxiliary: bool,
    num_classes: int,
    in_channels: int,
    side: int,
    batch: int,
    device: str,
) -> None:
    """A retraining's network (``model.init_channels``, ``model.layers``) and its batch."""

    def build(n: int) -> nn.Module:
        return build_network(
            genotype, family=network, C=channels, layers=n, N=n, num_classes=num_classes, in_channels=in_channels,
            auxiliary=auxiliary,
        )  # fmt: skip

    cells = layers * (3 if network == "nb201" else 1)
    cell_side = side // 8 if network == "imagenet" else side  # the ImageNet stems reduce by 8 before the cells
    what = f"the network with model.init_channels = {channels}, model.layers = {layers}"
    check_model(what, build, layers, cells, channels, cell_side, batch, device)
    check_shapes(f"{what}, model.network = {network}", lambda: build(layers), in_channels, side, batch)
