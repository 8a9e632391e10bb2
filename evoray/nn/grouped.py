"""Candidate ops for all the edges that leave one state of a supernet cell, computed together.

In a DARTS cell the edges leaving state ``j`` all read the same tensor, so an op type can run for all of them at
once: the parameters of the ``m`` edges are stacked along the channel axis and one grouped convolution does the work
of ``m``. Ops without parameters (identity, pools, zero) give the same output on every edge and run once. This is the
same arithmetic as one module per edge (the original DARTS layout), with a fraction of the kernel launches, which is
what dominates on a CPU at search sizes.

Every op takes ``slots``: the positions (within the group) of the edges to compute, ``None`` for all of them. A
sampling searcher (GDAS) asks each edge for one op; the others are never run.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from evoray.nn.ops import (
    AvgPool3x3,
    BatchNorm2d,
    MaxPool3x3,
    batch_norm,
    bias_into_batch_norm,
    bn_update_factor,
    conv2d,
    crop,
    depthwise_conv,
)

Slots = list[int] | None


def take(t: Tensor, slots: Slots, width: int) -> Tensor:
    """Rows of ``t`` (stacked per edge, ``width`` rows each) for the edges in ``slots``."""
    if slots is None:
        return t
    if slots == list(range(slots[0], slots[0] + len(slots))):
        return t[slots[0] * width : (slots[-1] + 1) * width]
    return torch.cat([t[s * width : (s + 1) * width] for s in slots])


def tile_channels(x: Tensor, n: int) -> Tensor:
    """``x.repeat(1, n, 1, 1)`` that keeps ``x``'s memory format (``repeat`` turns a channels-last tensor into a
    contiguous one, which costs the next convolution a layout conversion; a concatenation keeps it, and is faster)."""
    return x if n == 1 else torch.cat([x] * n, dim=1)


def stacked_bn(x: Tensor, bn: nn.BatchNorm2d, slots: Slots, C: int, shift: Tensor | None = None) -> Tensor:
    """BatchNorm (no affine) with per-edge running statistics, for the edges in ``slots``, of ``x`` plus ``shift`` (per
    channel; see :func:`evoray.nn.ops.batch_norm`)."""
    if slots is None:
        if shift is None:
            return bn(x)
        mean, var = (bn.running_mean, bn.running_var) if bn.track_running_stats else (None, None)
        return batch_norm(x, mean, var, bn.weight, bn.bias, bn.training, bn_update_factor(bn), bn.eps, shift)
    assert bn.running_mean is not None and bn.running_var is not None
    momentum = bn_update_factor(bn)
    if slots == list(range(slots[0], slots[0] + len(slots))):  # consecutive edges: their rows, updated in place
        rows = slice(slots[0] * C, (slots[-1] + 1) * C)
        mean, var = bn.running_mean[rows], bn.running_var[rows]
        return batch_norm(x, mean, var, None, None, bn.training, momentum, bn.eps, shift)
    mean, var = take(bn.running_mean, slots, C).clone(), take(bn.running_var, slots, C).clone()
    out = batch_norm(x, mean, var, None, None, bn.training, momentum, bn.eps, shift)
    if bn.training:
        with torch.no_grad():
            for i, s in enumerate(slots):
                bn.running_mean[s * C : (s + 1) * C] = mean[i * C : (i + 1) * C]
                bn.running_var[s * C : (s + 1) * C] = var[i * C : (i + 1) * C]
    return out


def conv_bn(
    x: Tensor, weight: Tensor, bias: Tensor | None, bn: nn.BatchNorm2d, slots: Slots, C: int, **conv: int
) -> Tensor:
    """``stacked_bn(F.conv2d(x, weight, bias, **conv), bn, slots, C)``, a one-group convolution of stride 1 without
    padding through :func:`evoray.nn.ops.conv2d` (a small 1x1 as a matrix product); the bias handed to a training
    matrix BatchNorm where one follows (:func:`evoray.nn.ops.bias_into_batch_norm`). In evaluation the BatchNorm (no
    affine, running statistics) is folded into the convolution: ``weight / sqrt(var + eps)`` and ``(bias - mean) /
    sqrt(var + eps)``, one op instead of two, the same result up to rounding."""
    plain = conv.get("groups", 1) == 1 and conv.get("stride", 1) == 1 and conv.get("padding", 0) == 0
    if bn.training and bias_into_batch_norm(x, weight, bias, **conv):
        y = conv2d(x, weight) if plain else F.conv2d(x, weight, None, **conv)
        return stacked_bn(y, bn, slots, C, shift=bias)
    if bn.training or bn.running_mean is None or bn.running_var is None:
        y = conv2d(x, weight, bias) if plain else F.conv2d(x, weight, bias, **conv)
        return stacked_bn(y, bn, slots, C)
    scale = take(bn.running_var, slots, C).add(bn.eps).rsqrt()
    shift = -take(bn.running_mean, slots, C) if bias is None else bias - take(bn.running_mean, slots, C)
    weight, bias = weight * scale.view(-1, 1, 1, 1), shift * scale
    return conv2d(x, weight, bias) if plain else F.conv2d(x, weight, bias, **conv)


def _n(slots: Slots, m: int) -> int:
    return m if slots is None else len(slots)


def _dw_param(rows: int, k: int) -> nn.Parameter:
    conv = nn.Conv2d(rows, rows, k, groups=rows, bias=False)  # PyTorch's default initialisation
    return nn.Parameter(conv.weight.detach())


def _pw_param(rows: int, c_in: int, k: int = 1) -> nn.Parameter:
    return nn.Parameter(nn.Conv2d(c_in, rows, k, bias=False).weight.detach())


def _bias_param(rows: int, c_in: int, k: int = 1) -> nn.Parameter:
    """The bias of ``rows`` convolutions of ``c_in`` inputs (PyTorch's default initialisation)."""
    conv = nn.Conv2d(c_in, rows, k, bias=True)
    assert conv.bias is not None
    return nn.Parameter(conv.bias.detach())


def _take_bias(b: nn.Parameter | None, slots: Slots, width: int) -> Tensor | None:
    return None if b is None else take(b, slots, width)


class GroupOp(nn.Module):
    """Base: ``m`` edges of ``C`` channels.

    ``forward(x, slots)`` returns (B, n*C, H', W'), the outputs of the ``n`` requested edges stacked along channels;
    a ``shared`` op may instead return one (B, C, H', W') output that holds for every edge.
    """

    shared = False
    relu_first = False
    tiles_input = False  # its edges' convolutions read the input tiled once per edge, or take it so tiled

    def __init__(self, C: int, m: int) -> None:
        super().__init__()
        self.C, self.m = C, m


class SharedIdentity(GroupOp):
    shared = True

    def forward(self, x: Tensor, slots: Slots = None) -> Tensor:
        return x


class SharedZero(GroupOp):
    shared = True

    def __init__(self, C: int, m: int, stride: int) -> None:
        super().__init__(C, m)
        self.stride = stride

    def forward(self, x: Tensor, slots: Slots = None) -> Tensor:
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class SharedPool(GroupOp):
    """Max or average 3x3 pool, optionally followed by a per-edge ``BatchNorm2d(affine=False)`` (DARTS search).

    In training mode the normalised output is the same on every edge (same input, batch statistics, no affine), so
    it is computed once; each edge's running statistics are still updated as if it had its own BN.
    """

    shared = True

    def __init__(self, C: int, m: int, kind: str, stride: int, bn: bool) -> None:
        super().__init__(C, m)
        self.pool: nn.Module = MaxPool3x3(stride) if kind == "max" else AvgPool3x3(stride)
        self.bn = BatchNorm2d(m * C, affine=False) if bn else None

    def forward(self, x: Tensor, slots: Slots = None) -> Tensor:
        y = self.pool(x)
        if self.bn is None:
            return y
        if not self.training:  # each edge's running statistics; the output becomes per edge
            assert self.bn.running_mean is not None and self.bn.running_var is not None
            n = _n(slots, self.m)
            rep = tile_channels(y, n)
            mean, var = take(self.bn.running_mean, slots, self.C), take(self.bn.running_var, slots, self.C)
            return F.batch_norm(rep, mean, var, None, None, False, 0.0, self.bn.eps)
        # batch statistics once, from the normalisation itself (rstd = 1 / sqrt(biased var + eps))
        out, mean, rstd = torch.native_batch_norm(y, None, None, None, None, True, 0.0, self.bn.eps)
        self._track(mean.detach(), rstd.detach(), y.numel() // y.shape[1], slots)
        return out

    @torch.no_grad()
    def _track(self, mean: Tensor, rstd: Tensor, n: int, slots: Slots) -> None:
        """Every requested edge's running statistics, as its own ``BatchNorm2d`` would update them (unbiased var)."""
        bn = self.bn
        assert bn is not None and bn.running_mean is not None and bn.running_var is not None
        var = (rstd.pow(-2) - bn.eps) * (n / max(n - 1, 1))
        momentum = bn.momentum or 0.1
        rows = slice(None) if slots is None else slots
        for running, batch in ((bn.running_mean, mean), (bn.running_var, var)):
            per_edge = running.view(self.m, self.C)
            per_edge[rows] = per_edge[rows] * (1 - momentum) + batch * momentum
        if bn.num_batches_tracked is not None:
            bn.num_batches_tracked.add_(1)


class GroupSepConv(GroupOp):
    """``m`` SepConvs: twice [ReLU, depthwise kxk, 1x1, BN]; the input arrives activated (and may arrive tiled, one
    copy per requested edge). ``bias``: the 1x1 convs have a bias (AutoDL's ops, where BN is not affine)."""

    relu_first = True
    tiles_input = True

    def __init__(self, C: int, m: int, k: int, stride: int, bias: bool = False) -> None:
        super().__init__(C, m)
        self.k, self.stride, self.pad = k, stride, k // 2
        self.dw1, self.pw1 = _dw_param(m * C, k), _pw_param(m * C, C)
        self.bn1 = BatchNorm2d(m * C, affine=False)
        self.dw2, self.pw2 = _dw_param(m * C, k), _pw_param(m * C, C)
        self.bn2 = BatchNorm2d(m * C, affine=False)
        self.pw1_bias = _bias_param(m * C, C) if bias else None
        self.pw2_bias = _bias_param(m * C, C) if bias else None

    def forward(self, x: Tensor, slots: Slots = None) -> Tensor:
        n, C = _n(slots, self.m), self.C
        h = x if x.shape[1] == n * C else tile_channels(x, n)  # (B, nC, H, W), edge-major
        h = depthwise_conv(h, take(self.dw1, slots, C), self.stride, self.pad)
        h = conv_bn(h, take(self.pw1, slots, C), _take_bias(self.pw1_bias, slots, C), self.bn1, slots, C, groups=n)
        h = depthwise_conv(F.relu(h), take(self.dw2, slots, C), 1, self.pad)
        pw2, pw2_bias = take(self.pw2, slots, C), _take_bias(self.pw2_bias, slots, C)
        return conv_bn(h, pw2, pw2_bias, self.bn2, slots, C, groups=n)


class GroupDilConv(GroupOp):
    """``m`` DilConvs: ReLU, depthwise kxk dilation 2, 1x1 (with a bias if ``bias``), BN; the input may arrive tiled,
    as :class:`GroupSepConv`'s."""

    relu_first = True
    tiles_input = True

    def __init__(self, C: int, m: int, k: int, stride: int, bias: bool = False) -> None:
        super().__init__(C, m)
        self.stride, self.pad = stride, k - 1
        self.dw, self.pw = _dw_param(m * C, k), _pw_param(m * C, C)
        self.bn = BatchNorm2d(m * C, affine=False)
        self.pw_bias = _bias_param(m * C, C) if bias else None

    def forward(self, x: Tensor, slots: Slots = None) -> Tensor:
        n, C = _n(slots, self.m), self.C
        h = x if x.shape[1] == n * C else tile_channels(x, n)
        h = depthwise_conv(h, take(self.dw, slots, C), self.stride, self.pad, dilation=2)
        return conv_bn(h, take(self.pw, slots, C), _take_bias(self.pw_bias, slots, C), self.bn, slots, C, groups=n)


class GroupFactorizedReduce(GroupOp):
    """``m`` FactorizedReduce (skip_connect at stride 2): two 1x1 stride-2 convs per edge, concat, BN."""

    relu_first = True

    def __init__(self, C: int, m: int, bias: bool = False) -> None:
        super().__init__(C, m)
        assert C % 2 == 0, f"FactorizedReduce needs an even C, got {C}"
        self.conv_1, self.conv_2 = _pw_param(m * C // 2, C), _pw_param(m * C // 2, C)
        self.bn = BatchNorm2d(m * C, affine=False)
        self.conv_1_bias = _bias_param(m * C // 2, C) if bias else None
        self.conv_2_bias = _bias_param(m * C // 2, C) if bias else None

    def forward(self, x: Tensor, slots: Slots = None) -> Tensor:
        n, C = _n(slots, self.m), self.C
        half = C // 2
        a = F.conv2d(x, take(self.conv_1, slots, half), _take_bias(self.conv_1_bias, slots, half), stride=2)
        b = F.conv2d(crop(x, 1, 1), take(self.conv_2, slots, half), _take_bias(self.conv_2_bias, slots, half), stride=2)
        # (B, nC/2, H/2, W/2) each; edge s takes its half of a, then its half of b (a concatenation keeps the input's
        # memory format, where a reshape through five dimensions would make the cell's output contiguous)
        parts = a.split(half, dim=1), b.split(half, dim=1)  # per edge; a split's backward is one concatenation
        halves = [t[s] for s in range(n) for t in parts]
        return stacked_bn(torch.cat(halves, dim=1), self.bn, slots, C)


class GroupReLUConvBN(GroupOp):
    """``m`` NAS-Bench-201 ``nor_conv_kxk``: ReLU, conv (with a bias if ``bias``), BN (one dense conv over the
    shared input)."""

    relu_first = True

    def __init__(self, C: int, m: int, k: int, stride: int, bias: bool = False) -> None:
        super().__init__(C, m)
        self.stride, self.pad = stride, k // 2
        self.weight = _pw_param(m * C, C, k)
        self.bn = BatchNorm2d(m * C, affine=False)
        self.bias = _bias_param(m * C, C, k) if bias else None

    def forward(self, x: Tensor, slots: Slots = None) -> Tensor:
        weight, bias = take(self.weight, slots, self.C), _take_bias(self.bias, slots, self.C)
        return conv_bn(x, weight, bias, self.bn, slots, self.C, stride=self.stride, padding=self.pad)


class GroupNoise(GroupOp):
    """RobustDARTS ``noise``: independent N(0, 1) samples for every edge."""

    def __init__(self, C: int, m: int, stride: int) -> None:
        super().__init__(C, m)
        self.stride = stride

    def forward(self, x: Tensor, slots: Slots = None) -> Tensor:
        cl = x.stride(1) == 1 and x.shape[1] > 1  # drawn in NCHW order (as without channels-last), then this format
        x = x[:, :, :: self.stride, :: self.stride]
        B, _, H, W = x.shape
        noise = torch.randn(B, _n(slots, self.m) * self.C, H, W, device=x.device, dtype=x.dtype)
        return noise.contiguous(memory_format=torch.channels_last) if cl else noise


def build_group_op(name: str, C: int, m: int, stride: int, pool_bn: bool, bias: bool = False) -> GroupOp:
    """The grouped form of op ``name`` for ``m`` edges of ``C`` channels; ``pool_bn``: a BN after each pool (DARTS'
    search ops); ``bias``: convolutions followed by a (non-affine) BN get a bias (AutoDL's search ops)."""
    if name == "none":
        return SharedZero(C, m, stride)
    if name == "skip_connect":
        return SharedIdentity(C, m) if stride == 1 else GroupFactorizedReduce(C, m, bias)
    if name in ("max_pool_3x3", "avg_pool_3x3"):
        return SharedPool(C, m, name[:3], stride, pool_bn)
    if name.startswith("sep_conv_"):
        return GroupSepConv(C, m, int(name[-1]), stride, bias)
    if name.startswith("dil_conv_"):
        return GroupDilConv(C, m, int(name[-1]), stride, bias)
    if name.startswith("nor_conv_"):
        return GroupReLUConvBN(C, m, int(name[-1]), stride, bias)
    if name == "noise":
        return GroupNoise(C, m, stride)
    from evoray.nn.ops import OPS  # the registry's error lists every valid op name

    OPS.get(name)
    raise NotImplementedError(f"op {name!r} has no grouped supernet form")
