"""Candidate operations of the DARTS-family and NAS-Bench-201 spaces.

Every op is built by ``OPS.get(name)(C, stride, affine)``. Ops that begin with a ReLU (the convolutions and
FactorizedReduce) set ``relu_first = True``; a supernet computes the ReLU of each state once and hands the activated
input to all of them (``apply_relu=False``), while a discrete network lets each op apply its own.

CPU-oriented rewrites keep the arithmetic of the original ops (exactly, or to float rounding where noted):
- a depthwise convolution with dilation 2 runs as an undilated one on the 2x2 polyphase components of its input
  (``pixel_unshuffle``), or on the even-even component when its stride is 2;
- a 3x3, stride-1 average pool without padding in its count runs as two separable box sums divided by the count, and
  so does its backward (the window is symmetric);
- a training BatchNorm of a channels-last map of fewer than 16 channels (and enough elements) normalises it as a
  matrix (``BatchNorm2d``, :func:`batch_norm`; to float rounding);
- strided crops of a channels-last map (:func:`crop`) give it a channels-last gradient;
- a 1x1 convolution of a small channels-last map is one matrix product of its (pixels, channels) view (``Conv2d``,
  :func:`conv2d`; to float rounding);
- a convolution's bias before a training matrix BatchNorm goes to the BatchNorm, whose batch statistics remove it
  (:func:`bias_into_batch_norm`: the same outputs, input and weight gradients and running statistics to float
  rounding; the bias's gradient, float noise about zero in the written-out form, is zero).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from evoray.registry import Registry

OpBuilder = Callable[[int, int, bool], nn.Module]
OPS: Registry[OpBuilder] = Registry("op")


class Zero(nn.Module):
    """The ``none`` op: zeros of the (strided) input's shape."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class Identity(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x


class Noise(nn.Module):
    """RobustDARTS S4's ``noise`` op: N(0, 1) samples of the (strided) input's shape, no gradient to the input."""

    def __init__(self, stride: int, mean: float = 0.0, std: float = 1.0) -> None:
        super().__init__()
        self.stride, self.mean, self.std = stride, mean, std

    def forward(self, x: Tensor) -> Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return torch.randn_like(x).mul_(self.std).add_(self.mean)


def _row_fold(rows: int, C: int) -> int:
    """How many pixels of a (rows, C) channels-last matrix one row of its wide view holds: about 128 values a row
    (elementwise kernels broadcasting a C-vector along rows of C values run several times slower than along rows of
    128), and a divisor of ``rows``."""
    k = max(1, 128 // C)
    while rows % k:
        k -= 1
    return k


_FOLD_CACHE: dict[tuple[int, int, float, torch.device, torch.dtype], Tensor] = {}
_ONES_CACHE: dict[tuple[int, torch.device, torch.dtype], Tensor] = {}


def _column_sums(m: Tensor, out: Tensor | None = None) -> Tensor:
    """``m.sum(0)`` of a (rows, cols) matrix (into ``out``, a vector, if given); from 64 columns and 64k elements, as
    the product of a row of ones (cached) with it: on a matrix just written by both threads ``sum(0)`` reads it across
    the cores, where the product is 3-6x faster ((1024, 128): 25 against 8 us; (4096, 128): 110 against 16 us; below
    that size, or narrower, it is the slower). Float rounding differs (blocked against pairwise sums: 4e-7 against
    1e-7 relative at 1k rows)."""
    rows, cols = m.shape
    if cols < 64 or rows * cols < 1 << 16:
        return torch.sum(m, 0, out=out) if out is not None else m.sum(0)
    key = (rows, m.device, m.dtype)
    if key not in _ONES_CACHE:
        with torch.inference_mode(False), torch.no_grad():
            _ONES_CACHE[key] = torch.ones(1, rows, device=m.device, dtype=m.dtype)
    return torch.mm(_ONES_CACHE[key], m, out=None if out is None else out.view(1, -1)).view(-1)


def _mean_fold(k: int, C: int, scale: float, like: Tensor) -> Tensor:
    """The (kC, kC) matrix that adds up the columns of each channel of a wide view whose rows hold ``k`` pixels of
    ``C`` channels, times ``scale`` (cached): the column sums times it are the per-channel sums times ``scale``, tiled
    ``k`` times as a row is laid out (symmetric, so it multiplies from either side)."""
    key = (k, C, scale, like.device, like.dtype)
    if key not in _FOLD_CACHE:
        with torch.inference_mode(False), torch.no_grad():
            eye = torch.eye(C, device=like.device, dtype=like.dtype)
            _FOLD_CACHE[key] = eye.repeat(k, k).mul_(scale)
    return _FOLD_CACHE[key]


def _channels_last_view(m: Tensor, N: int, C: int, H: int, W: int) -> Tensor:
    """The (N, C, H, W) channels-last map whose memory is the dense matrix ``m`` (one view op)."""
    return m.as_strided((N, C, H, W), (H * W * C, 1, W * C, C))


class _MatrixBatchNorm(torch.autograd.Function):
    """Training-mode BatchNorm of a channels-last map read as a matrix: its (N*H*W, C) values viewed as rows of ``k``
    pixels (:func:`_row_fold`), every per-channel vector (means, centred second moments, scales) held tiled ``k``
    times as a row is laid out (:func:`_mean_fold`); the running statistics are updated as ``F.batch_norm`` updates
    them (the unbiased variance); ``weight`` and ``bias`` optional (affine).

    ``shift``: per-channel constants the map was to carry and does not (a convolution's bias, left out of its
    product): batch statistics remove them, so they change neither the output nor the input's gradient, and their
    own gradient is zero; only the running mean moves by them."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        running_mean: Tensor | None,
        running_var: Tensor | None,
        momentum: float,
        eps: float,
        shift: Tensor | None = None,
    ) -> Tensor:
        N, C, H, W = x.shape
        rows = N * H * W
        k = _row_fold(rows, C)
        wide = x.as_strided((rows // k, k * C), (k * C, 1))  # a view of the dense channels-last map
        fold = _mean_fold(k, C, 1.0 / rows, x)
        mean = torch.mv(fold, _column_sums(wide))
        centred = wide - mean
        var = torch.mv(fold, _column_sums(centred * centred))  # biased, as the normalisation uses
        rstd = (var + eps).rsqrt_()
        xhat = centred.mul_(rstd)
        if running_mean is not None and running_var is not None:
            with torch.no_grad():
                running_mean.mul_(1.0 - momentum).add_(mean[:C] if shift is None else mean[:C] + shift, alpha=momentum)
                running_var.mul_(1.0 - momentum).add_(var[:C], alpha=momentum * rows / max(rows - 1, 1))
        ctx.save_for_backward(xhat, rstd, weight)
        ctx.k, ctx.shift = k, shift is not None
        y = xhat
        if weight is not None:
            y = torch.addcmul(bias.repeat(k), xhat, weight.repeat(k)) if bias is not None else xhat * weight.repeat(k)
        elif bias is not None:
            y = xhat + bias.repeat(k)
        return _channels_last_view(y, N, C, H, W)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        xhat, rstd, weight = ctx.saved_tensors
        N, C, H, W = g.shape
        rows, k = N * H * W, ctx.k
        if g.is_contiguous(memory_format=torch.channels_last):
            gw = g.as_strided((rows // k, k * C), (k * C, 1))
        else:
            gw = g.permute(0, 2, 3, 1).reshape(rows // k, k * C)
        sums = gw.new_empty(2, k * C)  # column sums of g and of g * xhat
        _column_sums(gw, out=sums[0])
        _column_sums(gw * xhat, out=sums[1])
        # d x = weight * rstd * (g - mean(g) - xhat * mean(g * xhat)), per channel: two passes over the map,
        # g * scale + (-scale * mean(g)), then + xhat * (-scale * mean(g * xhat))
        coef = torch.mm(sums, _mean_fold(k, C, -1.0 / rows, g))  # (2, kC): -mean(g), -mean(g * xhat), tiled
        grad_w = coef[1, :C] * -rows if ctx.needs_input_grad[1] else None
        grad_b = coef[0, :C] * -rows if ctx.needs_input_grad[2] else None
        scale = rstd if weight is None else rstd * weight.repeat(k)
        coef.mul_(scale)
        grad = _channels_last_view(torch.addcmul(coef[0], gw, scale).addcmul_(xhat, coef[1]), N, C, H, W)
        grad_shift = g.new_zeros(C) if ctx.shift and ctx.needs_input_grad[7] else None
        return grad, grad_w, grad_b, None, None, None, None, grad_shift


# The smallest map (in elements) on which the matrix form wins, keyed by whether the channel count is a multiple of 8.
# Measured forward and backward on 2 threads of a 189 GFLOP/s (fp32 matmul) CPU: 8 channels from about 100k
# ((64, 8, 16, 16) 500 against 600-650 us, (32, 8, 16, 16) 395 against 340 us); other counts from about 8k
# ((16, 12, 8, 8) 180 against 240 us, (64, 6, 8, 8) 210 against 500 us; (8, 12, 8, 8) 177 against 159 us). Below, its
# dozen small ops cost more than PyTorch's kernel. CPUs differ: on an AVX-512 one (about 350 GFLOP/s) PyTorch's
# kernel is slow wherever the count is not a multiple of 16 (8 channels from about 10k: (64, 8, 8, 8) 197 against
# 334 us; also 24 and 36 channels, which this rule leaves to it), whichever vector width it dispatches.
MATRIX_MIN_ELEMENTS = {True: 1 << 17, False: 1 << 13}


def _matrix_fits(C: int, numel: int, device: torch.device, dtype: torch.dtype) -> bool:
    """Whether a channels-last map of ``C`` channels and ``numel`` elements takes :class:`_MatrixBatchNorm` (see
    :func:`_matrix_is_faster`)."""
    return (
        device.type == "cpu"
        and dtype == torch.float32
        and 1 < C < 16
        and MATRIX_MIN_ELEMENTS[C % 8 == 0] <= numel <= 1 << 21
        and torch.get_num_threads() > 1
    )


def _matrix_is_faster(x: Tensor) -> bool:
    """Where :class:`_MatrixBatchNorm` beats PyTorch's channels-last BatchNorm: on the CPU, fewer than 16 channels
    (whose kernels split them over the threads at a loss; on one thread PyTorch's is the faster), float32, from
    :data:`MATRIX_MIN_ELEMENTS` to 2M elements (where the float32 products' rounding stays near the native
    kernel's)."""
    return (
        x.dim() == 4
        and _matrix_fits(x.shape[1], x.numel(), x.device, x.dtype)
        and x.is_contiguous(memory_format=torch.channels_last)
        and not x.is_contiguous()
    )


def bias_into_batch_norm(
    x: Tensor, weight: Tensor, bias: Tensor | None, stride: int = 1, padding: int = 0, **_: int
) -> bool:
    """Whether a convolution of a channels-last map ``x`` with a bias, followed by a training BatchNorm of the matrix
    form (see :func:`_matrix_is_faster`), leaves its bias to the BatchNorm (its ``shift``), whose batch statistics
    remove it: a 1x1 convolution then runs as the matrix product (a bias under 16 channels costs the product more than
    PyTorch's kernel: 140 against 55 us forward for (64, 8, 16, 16)), and PyTorch's convolutions skip the bias's
    addition and gradient (3x3 of (64, 8, 16, 16): backward 408 against 356-374 us). The other convolution arguments
    (``groups``) do not change the output's size."""
    if bias is None or x.dim() != 4 or x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last):
        return False
    N, H, W = x.shape[0], x.shape[2], x.shape[3]
    C, kh, kw = weight.shape[0], weight.shape[2], weight.shape[3]
    numel = N * C * ((H + 2 * padding - kh) // stride + 1) * ((W + 2 * padding - kw) // stride + 1)
    return _matrix_fits(C, numel, x.device, x.dtype)


def batch_norm(
    x: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
    shift: Tensor | None = None,
) -> Tensor:
    """``F.batch_norm`` of ``x`` plus ``shift`` (per channel, if given); in training, a small channels-last map of
    fewer than 16 channels on the CPU is normalised by :class:`_MatrixBatchNorm` (see :func:`_matrix_is_faster`), the
    same to float rounding, which takes the shift without adding it."""
    if training and _matrix_is_faster(x):
        out = _MatrixBatchNorm.apply(x, weight, bias, running_mean, running_var, momentum, eps, shift)
        return out  # type: ignore[no-any-return]
    if shift is not None:
        x = x + shift.view(1, -1, 1, 1)
    return F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)


def bn_update_factor(bn: nn.BatchNorm2d) -> float:
    """How far this forward moves ``bn``'s running statistics, as ``nn.BatchNorm2d`` counts it: its momentum, or with
    momentum None a cumulative average (BatchNorm recalibration); counts the batch."""
    if not bn.training:
        return 0.0
    if bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
    if bn.momentum is None:
        return 1.0 / float(bn.num_batches_tracked) if bn.num_batches_tracked is not None else 0.0
    return bn.momentum


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` (the same parameters, buffers and state dict) whose training forward goes through
    :func:`batch_norm`."""

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and _matrix_is_faster(x)):
            return super().forward(x)
        factor = bn_update_factor(self)
        mean, var = (self.running_mean, self.running_var) if self.track_running_stats else (None, None)
        out = _MatrixBatchNorm.apply(x, self.weight, self.bias, mean, var, factor, self.eps)
        return out  # type: ignore[no-any-return]


class _ReLUFirst(nn.Module):
    """Base of the ops that open with a ReLU; ``apply_relu=False`` when the caller passes an activated input."""

    relu_first = True

    def __init__(self) -> None:
        super().__init__()
        self.apply_relu = True

    def forward(self, x: Tensor) -> Tensor:
        return self.body(F.relu(x) if self.apply_relu else x)

    def body(self, x: Tensor) -> Tensor:
        raise NotImplementedError


class ReLUConvBN(_ReLUFirst):
    """ReLU, conv, BN. ``bias`` gives the conv a bias, as AutoDL's search ops do where BN is not affine."""

    def __init__(
        self, C_in: int, C_out: int, kernel: int, stride: int, padding: int, affine: bool = True, bias: bool = False
    ) -> None:
        super().__init__()
        self.conv = Conv2d(C_in, C_out, kernel, stride=stride, padding=padding, bias=bias)
        self.bn = BatchNorm2d(C_out, affine=affine)

    def body(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))


class _Crop(torch.autograd.Function):
    """``x[:, :, start::step, start::step]`` whose backward builds the input's gradient in the input's memory format
    (a slice's own backward builds it NCHW, and every later op on a channels-last map then mixes formats)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, start: int, step: int) -> Tensor:  # type: ignore[override]
        ctx.shape, ctx.start, ctx.step = x.shape, start, step
        return x[:, :, start::step, start::step]

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        grad = torch.empty(ctx.shape, dtype=g.dtype, device=g.device, memory_format=torch.channels_last).zero_()
        grad[:, :, ctx.start :: ctx.step, ctx.start :: ctx.step] = g
        return grad, None, None


def crop(x: Tensor, start: int, step: int) -> Tensor:
    """``x[:, :, start::step, start::step]``; the gradient of a channels-last map stays channels-last."""
    channels_last = x.dim() == 4 and x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last)
    if channels_last and torch.is_grad_enabled() and x.requires_grad:
        return _Crop.apply(x, start, step)  # type: ignore[no-any-return]
    return x[:, :, start::step, start::step]


def depthwise_conv(x: Tensor, weight: Tensor, stride: int, padding: int, dilation: int = 1) -> Tensor:
    """Bias-free depthwise conv (``groups`` = output channels), exactly as ``F.conv2d`` computes it, by the fastest
    route measured on the CPU kernels:

    - dilation 2, stride 2: an undilated conv on the input's even-even component;
    - dilation 2, stride 1, with gradients and an even map: an undilated conv on the 2x2 polyphase components (the
      dilated conv's backward is several times slower); otherwise the dilated conv itself, its taps that only ever
      see padding cropped away (the dilated forward is 3-10x faster than the polyphase one, but falls to a slow
      kernel when the dilated kernel is wider than the map);
    - stride-1 "same" convs through :func:`same_depthwise`.
    """
    groups, k = weight.shape[0], weight.shape[-1]
    if dilation == 2 and padding == k - 1 and stride in (1, 2) and k % 2 == 1:
        if stride == 2:
            return same_depthwise(crop(x, 0, 2), weight)
        grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
        if grad and x.shape[-1] % 2 == 0 and x.shape[-2] % 2 == 0:
            phases = F.pixel_unshuffle(x, 2)  # (B, 4C, H/2, W/2): channel c*4 + phase
            return F.pixel_shuffle(same_depthwise(phases, weight.repeat_interleave(4, dim=0)), 2)
        return same_depthwise(x, weight, dilation=2)
    if stride == 1 and dilation == 1 and 2 * padding == k - 1:
        return same_depthwise(x, weight)
    return F.conv2d(x, weight, stride=stride, padding=padding, dilation=dilation, groups=groups)


def same_depthwise(x: Tensor, weight: Tensor, dilation: int = 1) -> Tensor:
    """Stride-1 depthwise conv with "same" padding (``dilation * (k // 2)``) and an odd kernel.

    Kernel taps that reach further than the map itself only ever see padding, so they are cropped away: a 5x5 kernel
    on a 2x2 map is a 3x3 kernel, and the CPU kernels are much faster for it (the cropped taps get zero gradient,
    as they would anyway).
    """
    p = weight.shape[-1] // 2
    H, W = x.shape[-2:]
    rh, rw = min(p, (H - 1) // dilation), min(p, (W - 1) // dilation)
    if rh < p or rw < p:
        weight = weight[:, :, p - rh : p + rh + 1, p - rw : p + rw + 1]
    if rh == rw == 0:
        dilation = 1
    return F.conv2d(x, weight, padding=(dilation * rh, dilation * rw), dilation=dilation, groups=weight.shape[0])


def _matmul_is_faster(x: Tensor, weight: Tensor, bias: Tensor | None) -> bool:
    """Where a 1x1 convolution of a channels-last CPU map runs faster as one matrix product than as PyTorch's
    (mkldnn) convolution: float32, dense (one group), up to 16k pixels (beyond, the two are even or the convolution
    wins), a bias only with 16 or more output channels (adding a narrower bias row by row is slow). Measured forward
    and backward on 2 threads: (64, 16, 8, 8) with a bias 224 against 140 us, (64, 8, 8, 8) to 16 channels 186
    against 97, (64, 8, 16, 16) 278 against 208; the per-call cost of the convolution is what the product saves."""
    return (
        x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and x.dim() == 4
        and weight.shape[2:] == (1, 1)
        and weight.shape[1] == x.shape[1]
        and x.shape[0] * x.shape[2] * x.shape[3] <= 1 << 14
        and (bias is None or weight.shape[0] >= 16)
        and x.is_contiguous(memory_format=torch.channels_last)
    )


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.conv2d(x, weight, bias)`` (one group, stride 1, no padding); a 1x1 convolution of a small channels-last CPU
    map runs as one matrix product of its (pixels, C) view (see :func:`_matmul_is_faster`), the same sums to float
    rounding, the output channels-last."""
    if _matmul_is_faster(x, weight, bias):
        N, C, H, W = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(N * H * W, C)
        w = weight.view(weight.shape[0], C).t()
        y = torch.mm(rows, w) if bias is None else torch.addmm(bias, rows, w)
        return y.view(N, H, W, -1).permute(0, 3, 1, 2)
    return F.conv2d(x, weight, bias)


class Conv2d(nn.Conv2d):
    """A one-group ``nn.Conv2d`` (same parameters and state) that runs through :func:`conv2d`."""

    def forward(self, x: Tensor) -> Tensor:
        pointwise = self.kernel_size == (1, 1) and self.stride == (1, 1) and self.padding in ((0, 0), "valid")
        if pointwise and self.groups == 1 and self.padding_mode == "zeros":
            return conv2d(x, self.weight, self.bias)
        return super().forward(x)


class DepthwiseConv2d(nn.Conv2d):
    """A bias-free depthwise ``nn.Conv2d`` (same parameters and state) that runs through :func:`depthwise_conv`.
    Called as a module, so that per-module counters (thop's FLOPs) see it."""

    def __init__(self, C: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> None:
        super().__init__(C, C, kernel, stride, padding, dilation=dilation, groups=C, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return depthwise_conv(x, self.weight, self.stride[0], int(self.padding[0]), self.dilation[0])  # type: ignore[arg-type]


class DilConv(_ReLUFirst):
    """ReLU, depthwise kxk conv (dilation ``dilation``), 1x1 conv, BN."""

    def __init__(
        self, C_in: int, C_out: int, kernel: int, stride: int, padding: int, dilation: int, affine: bool = True
    ) -> None:
        super().__init__()
        self.dw = DepthwiseConv2d(C_in, kernel, stride, padding, dilation)
        self.pw = Conv2d(C_in, C_out, 1, bias=False)
        self.bn = BatchNorm2d(C_out, affine=affine)

    def body(self, x: Tensor) -> Tensor:
        return self.bn(self.pw(self.dw(x)))


class SepConv(_ReLUFirst):
    """Twice [ReLU, depthwise kxk conv, 1x1 conv, BN]; the stride applies to the first depthwise conv only."""

    def __init__(self, C_in: int, C_out: int, kernel: int, stride: int, padding: int, affine: bool = True) -> None:
        super().__init__()
        self.dw1 = DepthwiseConv2d(C_in, kernel, stride, padding)
        self.pw1 = Conv2d(C_in, C_in, 1, bias=False)
        self.bn1 = BatchNorm2d(C_in, affine=affine)
        self.dw2 = DepthwiseConv2d(C_in, kernel, 1, padding)
        self.pw2 = Conv2d(C_in, C_out, 1, bias=False)
        self.bn2 = BatchNorm2d(C_out, affine=affine)

    def body(self, x: Tensor) -> Tensor:
        x = self.bn1(self.pw1(self.dw1(x)))
        return self.bn2(self.pw2(self.dw2(F.relu(x))))


class FactorizedReduce(_ReLUFirst):
    """Halve the resolution: ReLU, two 1x1 stride-2 convs (the second shifted by one pixel), concat, BN."""

    def __init__(self, C_in: int, C_out: int, affine: bool = True, bias: bool = False) -> None:
        super().__init__()
        assert C_out % 2 == 0, f"FactorizedReduce needs an even C_out, got {C_out}"
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=bias)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=bias)
        self.bn = BatchNorm2d(C_out, affine=affine)

    def body(self, x: Tensor) -> Tensor:
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(crop(x, 1, 1))], dim=1))


def drop_path(x: Tensor, drop_prob: float) -> Tensor:
    """Zero whole samples with probability ``drop_prob`` and scale the kept ones by ``1 / (1 - drop_prob)``."""
    keep = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)  # (B, 1, 1, 1)
    return x / keep * mask


_COUNT_CACHE: dict[tuple[int, int, int, int, bool, torch.device, torch.dtype], Tensor] = {}


def _box_count(x: Tensor) -> Tensor:
    """How many real pixels each 3x3 window of ``x`` covers, as a (1, C, H, W) map in ``x``'s memory format (a
    division by it runs over dense rows; broadcasting an (H, W) count over a channels-last map's channels is twice as
    slow at 8 channels); cached, and built as a normal tensor even under inference mode (an inference tensor in the
    cache would break the next training step that reads it)."""
    C, H, W = x.shape[-3:]
    channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    key = (x.dim(), C, H, W, channels_last, x.device, x.dtype)
    if key not in _COUNT_CACHE:
        with torch.inference_mode(False), torch.no_grad():
            ones = torch.ones(1, 1, H, W, device=x.device, dtype=x.dtype)
            count = (F.avg_pool2d(ones, 3, 1, 1, count_include_pad=True) * 9).view(H, W).expand(C, H, W)
            count = count.reshape((1,) * (x.dim() - 3) + (C, H, W))
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            _COUNT_CACHE[key] = count.contiguous(memory_format=fmt)
    return _COUNT_CACHE[key]


def _box_sum(x: Tensor) -> Tensor:
    """The sum of every 3x3 window of ``x`` zero-padded by 1: two passes of three shifted views (rows, then columns)."""
    p = F.pad(x, (1, 1, 1, 1))
    rows = p[..., :-2] + p[..., 1:-1]
    rows += p[..., 2:]  # (B, C, H+2, W)
    box = rows[..., :-2, :] + rows[..., 1:-1, :]
    box += rows[..., 2:, :]  # (B, C, H, W)
    return box


class _BoxAverage(torch.autograd.Function):
    """``avg_pool2d(x, 3, 1, 1, count_include_pad=False)`` as a box sum divided by each window's count. The 3x3 window
    is symmetric, so the backward is the same box sum of ``g / count``: two passes, where autograd through the
    shifted views would allocate and add a padded gradient for each of the six."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # type: ignore[override]
        count = _box_count(x)
        ctx.save_for_backward(count)
        return _box_sum(x).div_(count)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Tensor:  # type: ignore[override]
        (count,) = ctx.saved_tensors
        return _box_sum(g / count)


class AvgPool3x3(nn.Module):
    """3x3 average pool, padding 1, the padding excluded from the count.

    On the CPU at stride 1 it is :class:`_BoxAverage` (2-4x ``F.avg_pool2d`` for NCHW maps, forward and backward),
    except for channels-last maps of 8x8 or less or of 4M elements or more, where ``F.avg_pool2d``'s channels-last
    kernel is the faster (``bench/supernet.py`` and the pools' own timings)."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride != 1 or x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
            return F.avg_pool2d(x, 3, self.stride, 1, count_include_pad=False)
        H, W = x.shape[-2:]
        channels_last = x.dim() == 4 and x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last)
        if channels_last and (H * W <= 64 or x.numel() >= 1 << 22):
            return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
        return _BoxAverage.apply(x)  # type: ignore[no-any-return]


def max_pool3x3(x: Tensor, stride: int) -> Tensor:
    """3x3 max pool, padding 1. Where no gradient is wanted (evaluation, fitness) it is the maximum of nine shifted
    views of the padded map: the same values as ``F.max_pool2d``, many times faster on the CPU for NCHW maps. With a
    gradient it is ``F.max_pool2d`` (whose gradient goes to one maximum of each window where several tie)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return F.max_pool2d(x, 3, stride, 1)
    H, W = x.shape[-2:]
    Ho, Wo = (H - 1) // stride + 1, (W - 1) // stride + 1
    p = F.pad(x, (1, 1, 1, 1), value=float("-inf"))
    rows = [p[:, :, i : i + stride * (Ho - 1) + 1 : stride] for i in range(3)]
    r = torch.maximum(torch.maximum(rows[0], rows[1]), rows[2])
    cols = [r[..., j : j + stride * (Wo - 1) + 1 : stride] for j in range(3)]
    return torch.maximum(torch.maximum(cols[0], cols[1]), cols[2])


class MaxPool3x3(nn.Module):
    """3x3 max pool, padding 1 (see :func:`max_pool3x3`)."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        return max_pool3x3(x, self.stride)


def _register_darts_ops() -> None:
    OPS.add("none", lambda C, stride, affine: Zero(stride))
    OPS.add("noise", lambda C, stride, affine: Noise(stride))
    OPS.add("avg_pool_3x3", lambda C, stride, affine: AvgPool3x3(stride))
    OPS.add("max_pool_3x3", lambda C, stride, affine: MaxPool3x3(stride))
    OPS.add(
        "skip_connect",
        lambda C, stride, affine: Identity() if stride == 1 else FactorizedReduce(C, C, affine=affine),
    )
    OPS.add("sep_conv_3x3", lambda C, stride, affine: SepConv(C, C, 3, stride, 1, affine))
    OPS.add("sep_conv_5x5", lambda C, stride, affine: SepConv(C, C, 5, stride, 2, affine))
    OPS.add("sep_conv_7x7", lambda C, stride, affine: SepConv(C, C, 7, stride, 3, affine))
    OPS.add("dil_conv_3x3", lambda C, stride, affine: DilConv(C, C, 3, stride, 2, 2, affine))
    OPS.add("dil_conv_5x5", lambda C, stride, affine: DilConv(C, C, 5, stride, 4, 2, affine))
    # NAS-Bench-201: ReLU-Conv-BN with the kernel's own padding.
    OPS.add("nor_conv_1x1", lambda C, stride, affine: ReLUConvBN(C, C, 1, stride, 0, affine))
    OPS.add("nor_conv_3x3", lambda C, stride, affine: ReLUConvBN(C, C, 3, stride, 1, affine))


_register_darts_ops()


def build_op(name: str, C: int, stride: int, affine: bool) -> nn.Module:
    """Build the op called ``name``; an unknown name raises a ``ConfigError`` listing the valid ones."""
    return OPS.get(name)(C, stride, affine)


def is_parameter_free(op: nn.Module) -> bool:
    return isinstance(op, (Identity, Zero, Noise))
