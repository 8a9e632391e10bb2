"""What the benches against the original codes share: the machine's fp32 matmul peak, multiply-adds counted by thop,
interleaved timing rounds, a job in a process of its own (an original code runs as it runs by itself, untouched by
evoray's process-wide runtime settings), and importing an original code from the folder the user names.

Counting: thop hooks the modules it has a rule for (convolutions, linear, BatchNorm, pools). evoray's supernets run the
edges of a cell as grouped convolutions on parameters of their own modules (``F.conv2d``), which thop has no rule for
and would count as zero; :func:`count_macs` counts such a module (one with convolution kernels of its own, 4-d
parameters, and no thop rule; not a network that merely holds its alphas) by
the multiply-adds of the convolutions and matrix products its forward runs (PyTorch's ``FlopCounterMode``), the same
formula thop applies to a convolution module, and its functional BatchNorms by thop's BatchNorm rule. The forward is
counted in training mode (a training step's arithmetic, BatchNorms included); only the modules it runs are counted
(GDAS: the sampled path).
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import io
import math
import multiprocessing as mp
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def matmul_peak(n: int = 2048, repeats: int = 5, device: str = "cpu", precision: str = "fp32") -> float:
    """GFLOP/s of an ``n x n`` matmul at the current torch thread count on ``device`` (in ``precision``'s dtype:
    fp32, or bf16 on a GPU): the median of ``repeats`` after one warm-up. The machine's practical limit for dense
    work (on a GPU, plain fp32: PyTorch leaves TF32 off for matmuls, though cuDNN's convolutions use it)."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=gen).to(device, dtype) for _ in range(2))
    out = torch.empty(n, n, device=device, dtype=dtype)
    torch.matmul(a, b, out=out)
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        torch.matmul(a, b, out=out)
        sync(device)
        times.append(time.perf_counter() - start)
    return 2.0 * n**3 / statistics.median(times) / 1e9


def peak_line(device: str, precision: str = "fp32") -> tuple[float, str]:
    """The measured matmul peak for a bench's device and precision, and the words that say how it was measured."""
    n = 8192 if device.startswith("cuda") else 2048
    dtype = "bf16" if precision == "bf16" and device.startswith("cuda") else "fp32"
    peak = matmul_peak(n, device=device, precision=dtype)
    return peak, f"{dtype} matmul peak {peak:.1f} GFLOP/s ({n}x{n}, median of 5)"


def sync(device: str | torch.device) -> None:
    """Wait for the work queued on ``device`` (a GPU's kernels run asynchronously; a timer must not stop early)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def synced(fn: Callable[[], Any], device: str | torch.device) -> Callable[[], Any]:
    """``fn``, returning only once the work it queued on ``device`` is done."""

    def run() -> Any:
        out = fn()
        sync(device)
        return out

    return run


def describe_device(device: str) -> str:
    """One line naming the device the bench runs on."""
    if torch.device(device).type != "cuda":
        return f"device cpu, {torch.get_num_threads()} threads"
    props = torch.cuda.get_device_properties(torch.device(device))
    return f"device {device}: {props.name}, {props.total_memory / 2**30:.0f} GiB, compute {props.major}.{props.minor}"


_busy: set[int] = set()
_custom: set[type] = set()
_COUNTED_BY_ATEN = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm)


def _batch_norm_flops(x_shape: Sequence[int], w_shape: Sequence[int] | None = None, *_: Any, **__: Any) -> int:
    """thop's rule for a BatchNorm (2 multiply-adds per input element, 4 when affine), as FLOPs."""
    return 2 * 2 * math.prod(x_shape) * (2 if w_shape is not None else 1)


_aten = torch.ops.aten
_BATCH_NORMS = {
    op: _batch_norm_flops
    for op in (
        _aten.native_batch_norm,
        _aten._native_batch_norm_legit,
        _aten._native_batch_norm_legit_no_training,
        _aten._batch_norm_with_update,
        _aten._batch_norm_no_update,
    )
}


def _ops(m: nn.Module) -> float:
    return float(m.get_buffer("total_ops"))


def _aten_rule(m: nn.Module, x: tuple[Any, ...], y: Any) -> None:
    """thop rule for a module thop does not know: rerun its forward under ``FlopCounterMode`` and count the
    multiply-adds of its convolutions and matrix products (FLOPs / 2) and of its functional BatchNorms (thop's rule),
    plus what thop's own rules count in its submodules other than convolutions, linear layers and BatchNorms."""
    if id(m) in _busy:  # the rerun itself
        return
    inner = [
        d
        for d in m.modules()
        if d is not m and hasattr(d, "total_ops") and type(d) not in _custom and not isinstance(d, _COUNTED_BY_ATEN)
    ]
    before = sum(_ops(d) for d in inner)
    _busy.add(id(m))
    try:
        with FlopCounterMode(display=False, custom_mapping=_BATCH_NORMS) as counter:
            m(*x)
    finally:
        _busy.discard(id(m))
    extra = sum(_ops(d) for d in inner) - before
    m.get_buffer("total_ops").add_(counter.get_total_flops() / 2 + extra)


class _Training(nn.Module):
    """Runs ``model`` in training mode under thop (which puts every module in eval mode): the arithmetic of a training
    step's forward, BatchNorms on batch statistics (evoray folds them into the convolutions in eval mode)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: Any) -> Any:
        self.model.train()
        return self.model(*inputs)


def count_macs(model: nn.Module, inputs: Sequence[Any], draws: int = 1) -> float:
    """Multiply-adds per image of one forward of ``model(*inputs)`` in training mode (the batch of ``inputs[0]``,
    at least 2 images), counted by thop on a deep copy; ``draws`` > 1 averages over forwards that sample their path
    (GDAS)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # thop imports distutils' LooseVersion
        import thop
        from thop.profile import register_hooks

    net = _Training(copy.deepcopy(model))
    custom: dict[type, Any] = {}
    for m in net.modules():
        kind = type(m)
        if kind in register_hooks:
            continue
        if any(p.dim() == 4 for p in m.parameters(recurse=False)):
            custom[kind] = _aten_rule
        else:  # a subclass of a module thop counts (evoray's BatchNorm2d): its base's rule
            base = next((b for b in kind.__mro__[1:] if b in register_hooks), None)
            if base is not None:
                custom[kind] = register_hooks[base]
    _custom.update(custom)
    total = 0.0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # every BatchNorm on PyTorch's own kernel (evoray's matrix form needs 2 threads), counted
    try:
        for _ in range(draws):
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                macs, _ = thop.profile(net, inputs=tuple(inputs), custom_ops=custom, verbose=False)
            total += float(macs)
    finally:
        torch.set_num_threads(threads)
    return total / draws / int(inputs[0].shape[0])


def interleave(jobs: Mapping[str, Callable[[], object]], rounds: int, log: bool = True) -> dict[str, list[float]]:
    """Seconds of each job per round, the jobs run one after another within a round (the order reversed every other
    round), so that a change in the machine's load falls on all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in jobs}
    names = list(jobs)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            start = time.perf_counter()
            jobs[name]()
            times[name].append(time.perf_counter() - start)
        if log:
            print(f"  round {r + 1}: " + ", ".join(f"{n} {times[n][-1]:.2f} s" for n in names), flush=True)
    return times


class Child:
    """Jobs in a spawned process of their own: ``factory(*args)`` builds them there and returns ``(jobs, info)``,
    ``jobs`` a dict of named callables; ``info`` comes back once, and ``child(name)`` runs job ``name`` once there and
    returns its result (``child.job(name)``: the same as a callable of no arguments). ``factory`` must be importable
    (a module-level function of the bench)."""

    def __init__(self, factory: Callable[..., tuple[dict[str, Callable[[], Any]], Any]], *args: Any) -> None:
        ctx = mp.get_context("spawn")
        self.conn, there = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(there, factory, args), daemon=True)
        self.process.start()
        self.info = self.conn.recv()

    def __call__(self, name: str = "run") -> Any:
        self.conn.send(name)
        return self.conn.recv()

    def job(self, name: str) -> Callable[[], Any]:
        return lambda: self(name)

    def close(self) -> None:
        self.conn.send(None)
        self.process.join()


def _serve(conn: Connection, factory: Callable[..., tuple[dict[str, Callable[[], Any]], Any]], args: tuple) -> None:
    jobs, info = factory(*args)
    conn.send(info)
    while (name := conn.recv()) is not None:
        conn.send(jobs[name]())


def import_original(folder: Path, module: str, needs: str, cpu: bool = True) -> ModuleType:
    """Import ``module`` of an original code from ``folder`` (put first on ``sys.path``). ``cpu``: with ``Tensor.cuda``
    and ``Module.cuda`` made no-ops, so that its CUDA-only code runs on the CPU (left alone on a GPU, where it runs as
    written). ``needs``: a file that must be there."""
    if not (folder / needs).is_file():
        raise SystemExit(f"--original {folder}: no {needs} there")
    sys.path.insert(0, str(folder))
    if cpu:
        torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
        nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    return importlib.import_module(module)


def synthetic_npz(path: Path, n: int, side: int, classes: int = 10, seed: int = 0) -> Path:
    """An .npz of ``n`` random uint8 images (n, side, side, 3) and labels, as evoray's npz loader reads it."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, side, side, 3), dtype=np.uint8)
    labels = np.arange(n) % classes
    np.savez(path, images=images, labels=labels)
    return path


def gflops(macs: float, factor: int, per_second: float) -> float:
    """GFLOP/s of ``per_second`` images each costing ``macs`` multiply-adds ``factor`` times (1: a forward, 3: a
    training step) at 2 FLOPs per multiply-add."""
    return 2.0 * factor * macs * per_second / 1e9
