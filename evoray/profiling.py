"""Model cost: parameters, multiply-accumulates (as thop counts them) and inference latency.

Input sizes are per sample, without the batch dimension: ``(3, 32, 32)`` for CIFAR. Models may return a tuple
``(logits, aux)``; only the first element is used. The caller's model is left as it was: same training modes, no
thop buffers or hooks.

Example::

    stats = profile_model(net, (3, 32, 32), torch.device("cuda"))  # net: DARTS_V2, C=36, 20 cells
    # {"params_m": 3.349342, "flops_m": 549.851328, "latency_ms": 4.1}
"""

from __future__ import annotations

import contextlib
import copy
import io
import statistics
import time
import warnings
from typing import Any

import torch
from torch import Tensor, nn


class _FirstOutput(nn.Module):
    """Wraps a model whose forward may return ``(logits, aux)`` so that it returns the logits alone."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(x)
        return out[0] if isinstance(out, (tuple, list)) else out


def count_parameters(model: nn.Module, exclude: tuple[str, ...] = ("auxiliary",)) -> int:
    """Number of parameters, skipping those whose qualified name contains any of ``exclude`` (DARTS reports the
    size without the auxiliary head). Shared parameters count once."""
    return sum(p.numel() for name, p in model.named_parameters() if not any(s in name for s in exclude))


def _sample_input(model: nn.Module, input_size: tuple[int, ...], batch_size: int, device: torch.device) -> Tensor:
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    return torch.randn(batch_size, *input_size, device=device, dtype=dtype)


def count_flops(model: nn.Module, input_size: tuple[int, ...], device: torch.device | str = "cpu") -> float:
    """Multiply-accumulates of one forward pass on one sample of shape ``input_size``, as thop counts them
    (Conv: out_numel * C_in / groups * k_h * k_w; Linear: in_features * out_numel; unknown modules count 0).

    Profiles a deep copy in eval mode, so the caller's model gets no leftover buffers or hooks.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # thop imports distutils' LooseVersion
        import thop

    device = torch.device(device)
    net = _FirstOutput(copy.deepcopy(model)).to(device).eval()
    x = _sample_input(net, input_size, 1, device)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        macs, _ = thop.profile(net, inputs=(x,), custom_ops=_thop_rules(), verbose=False)
    return float(macs)


def _thop_rules() -> dict[type, Any]:
    """thop's own counts for evoray's modules that stand in for PyTorch ones (thop matches exact types): a depthwise
    conv and evoray's Conv2d as ``nn.Conv2d``, the 3x3 average pool as ``nn.AvgPool2d``, evoray's BatchNorm2d as
    ``nn.BatchNorm2d``; the originals' networks count the same."""
    from thop.vision.basic_hooks import count_avgpool, count_convNd, count_normalization

    from evoray.nn.ops import AvgPool3x3, BatchNorm2d, Conv2d, DepthwiseConv2d

    rules = {DepthwiseConv2d: count_convNd, Conv2d: count_convNd, AvgPool3x3: count_avgpool}
    return {**rules, BatchNorm2d: count_normalization}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _lives_on(model: nn.Module, device: torch.device) -> bool:
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    tensors = [*model.parameters(), *model.buffers()]
    return all(t.device == device for t in tensors)


def measure_latency(
    model: nn.Module,
    input_size: tuple[int, ...],
    device: torch.device | str,
    warmup: int = 10,
    repeats: int = 50,
    batch_size: int = 1,
) -> float:
    """Median wall time of a forward pass in eval mode, in milliseconds per sample.

    Runs the model in place when it already lives on ``device`` (a copy is moved there otherwise) and restores every
    submodule's training mode afterwards. On CUDA the device is synchronised around each timed pass.
    """
    if repeats < 1 or warmup < 0 or batch_size < 1:
        raise ValueError(f"need repeats >= 1, warmup >= 0, batch_size >= 1; got {repeats}, {warmup}, {batch_size}")
    device = torch.device(device)
    net = model if _lives_on(model, device) else copy.deepcopy(model).to(device)
    modes = {m: m.training for m in net.modules()}
    net.eval()
    times = []
    try:
        with torch.inference_mode():
            x = _sample_input(net, input_size, batch_size, device)
            for _ in range(warmup):
                net(x)
            for _ in range(repeats):
                _synchronize(device)
                start = time.perf_counter()
                net(x)
                _synchronize(device)
                times.append(time.perf_counter() - start)
    finally:
        for m, training in modes.items():
            m.training = training
    return statistics.median(times) * 1000.0 / batch_size


PROFILE_KEYS = ("params_m", "flops_m", "latency_ms")  # what profile_model returns


def profile_model(
    model: nn.Module,
    input_size: tuple[int, ...],
    device: torch.device | str = "cpu",
    exclude: tuple[str, ...] = ("auxiliary",),
    warmup: int = 10,
    repeats: int = 50,
    batch_size: int = 1,
) -> dict[str, float]:
    """``params_m`` (millions, without ``exclude``), ``flops_m`` (millions of MACs per sample) and ``latency_ms``
    (median per sample) of a model."""
    return {
        "params_m": count_parameters(model, exclude) / 1e6,
        "flops_m": count_flops(model, input_size, device) / 1e6,
        "latency_ms": measure_latency(model, input_size, device, warmup, repeats, batch_size),
    }


_PARAMS_CACHE: dict[tuple[str, int, int], float] = {}


def genotype_params_m(genotype: str, C: int = 36, layers: int = 20) -> float:
    """Params (M, auxiliary head excluded) of a genotype's evaluation network for CIFAR-10 (DARTS family: ``C`` and
    ``layers``; NB201: its macro network, C=16, N=5), built on the meta device, without allocating weights."""
    from evoray.nn.networks import build_network
    from evoray.spaces import parse_genotype

    key = (genotype, C, layers)
    if key not in _PARAMS_CACHE:
        g = parse_genotype(genotype)
        with torch.device("meta"):
            if g.is_nb201:
                net = build_network(g, family="nb201", C=16, layers=5, N=5, num_classes=10)
            else:
                net = build_network(g, family="cifar", C=C, layers=layers, num_classes=10, auxiliary=False)
        _PARAMS_CACHE[key] = count_parameters(net) / 1e6
    return _PARAMS_CACHE[key]
