"""Every speed lever computes what the plain path computes: the same outputs and gradients, on every space and in
every weighting mode (channels-last memory format, the memory-format-keeping channel tiling, the no-gradient max
pool)."""

from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys
from typing import Any, TypedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evoray.config import config_from_dict
from evoray.nn import grouped, ops
from evoray.nn.grouped import tile_channels
from evoray.nn.ops import AvgPool3x3, _BoxAverage, depthwise_conv, max_pool3x3
from evoray.nn.supernet import DartsSupernet, EdgeGroup, NB201Supernet, SearchCell, Supernet
from evoray.nn.weighting import WEIGHTINGS, EdgeWeights, path_weights, random_path
from evoray.runtime import torch_threads
from evoray.searchers import SEARCHERS, SearchConfig, SearchSettings
from evoray.spaces import SPACES, get_space
from evoray.spaces.derive import random_genotype


def _supernet(space_name: str, mode: str) -> Supernet:
    torch.manual_seed(0)
    space = get_space(space_name)
    if space.family.num_inputs == 1:
        net: Supernet = NB201Supernet(space, C=4, N=1, weighting=mode)
    else:
        net = DartsSupernet(space, C=4, layers=3, weighting=mode)
    with torch.no_grad():
        for a in net.arch_parameters():
            a.normal_()  # distinct weights, so that a mixed-up edge or op shows
    if mode == "expert":  # some experts wiped out, so that the single-op path runs too
        for ct in space.cell_types:
            wiped = net.wiped(ct)
            wiped[::2, 1::3] = True
    return net


def test_tile_channels_equals_repeat_and_keeps_the_memory_format() -> None:
    x = torch.randn(2, 3, 5, 4)
    for fmt in (torch.contiguous_format, torch.channels_last):
        xf = x.contiguous(memory_format=fmt)
        for n in (1, 2, 4):
            out = tile_channels(xf, n)
            torch.testing.assert_close(out, x.repeat(1, n, 1, 1), rtol=0, atol=0)
            assert out.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (2, 3, 7, 5), (1, 2, 1, 1), (2, 4, 2, 3)])
def test_max_pool_without_gradient_equals_max_pool2d(shape: tuple[int, int, int, int], stride: int) -> None:
    x = torch.randn(*shape)
    x[0, 0, 0, :2] = 3.0  # a tie inside a window
    with torch.inference_mode():
        fast = max_pool3x3(x, stride)
    torch.testing.assert_close(fast, F.max_pool2d(x, 3, stride, 1), rtol=0, atol=0)
    xg = x.clone().requires_grad_(True)
    plain = max_pool3x3(xg, stride)  # with a gradient: F.max_pool2d itself
    plain.sum().backward()
    xr = x.clone().requires_grad_(True)
    F.max_pool2d(xr, 3, stride, 1).sum().backward()
    torch.testing.assert_close(xg.grad, xr.grad, rtol=0, atol=0)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    "shape", [(2, 3, 16, 16), (2, 3, 9, 9), (2, 4, 12, 7), (2, 3, 7, 5), (2, 4, 8, 8), (1, 2, 1, 1), (2, 5, 2, 3)]
)
def test_average_pool_equals_avg_pool2d_in_values_and_gradients(
    shape: tuple[int, ...], channels_last: bool, monkeypatch
) -> None:
    """The box-sum average pool (and the branch that hands small channels-last maps to ``F.avg_pool2d``) gives
    ``avg_pool2d(x, 3, 1, 1, count_include_pad=False)``'s outputs and input gradients, and keeps the memory format;
    its own backward passes the finite-difference check, in both memory formats. Maps of more than 64 pixels take
    the box sum in both formats (counted)."""
    x = torch.randn(*shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    boxes: list[int] = []
    real = _BoxAverage.apply

    def counted(t: torch.Tensor) -> torch.Tensor:
        boxes.append(1)
        return real(t)

    monkeypatch.setattr(_BoxAverage, "apply", counted)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = AvgPool3x3(1)(xa), F.avg_pool2d(xb, 3, 1, 1, count_include_pad=False)
    torch.testing.assert_close(ya, yb)
    g = torch.randn_like(yb)
    (ya * g).sum().backward()
    (yb * g).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad)
    if channels_last and shape[1] > 1:
        assert ya.is_contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        torch.testing.assert_close(AvgPool3x3(1)(x), yb.detach())
    cl = shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last)  # (1, 2, 1, 1) is, in either format
    assert bool(boxes) == (not cl or shape[2] * shape[3] > 64)
    x64 = torch.randn(*shape, dtype=torch.float64)
    if channels_last:
        x64 = x64.contiguous(memory_format=torch.channels_last)
    assert torch.autograd.gradcheck(real, (x64.requires_grad_(True),))


@pytest.fixture
def matrix_bn_on_small_maps(monkeypatch: pytest.MonkeyPatch) -> None:
    """The matrix BatchNorm for maps of any size (the tests' maps are small), its channel rule unchanged."""
    monkeypatch.setattr(ops, "MATRIX_MIN_ELEMENTS", {True: 0, False: 0})


@pytest.mark.parametrize(
    ("shape", "threads", "matrix"),
    [
        ((64, 8, 16, 16), 2, True),  # 8 channels: from 2^17 elements
        ((32, 8, 16, 16), 2, False),
        ((16, 12, 8, 8), 2, True),  # other counts under 16: from 2^13
        ((8, 12, 8, 8), 2, False),
        ((64, 6, 8, 8), 2, True),
        ((2, 4, 8, 8), 2, False),
        ((64, 16, 16, 16), 2, False),  # 16 channels and more: PyTorch's kernel
        ((64, 8, 16, 16), 1, False),  # one thread: PyTorch's kernel
        ((512, 12, 32, 32), 2, False),  # over 2M elements
    ],
)
def test_matrix_batch_norm_routing(shape: tuple[int, int, int, int], threads: int, matrix: bool) -> None:
    """Which training BatchNorms take the matrix form: channels-last CPU maps of 2-15 channels, on more than one
    thread, from 2^17 elements with 8 channels and 2^13 with other counts, up to 2M; never a contiguous map."""
    x = torch.empty(shape).contiguous(memory_format=torch.channels_last)
    with torch_threads(threads):
        assert ops._matrix_is_faster(x) == matrix
        assert not ops._matrix_is_faster(torch.empty(shape))


@pytest.mark.usefixtures("matrix_bn_on_small_maps")
@pytest.mark.parametrize("C", [2, 8, 12, 16])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_small_channels_last_batch_norm_equals_batch_norm(C: int, momentum: float | None) -> None:
    """A grouped op's BatchNorm on a channels-last map of fewer than 16 channels (the matrix form, on 2 threads) gives
    ``nn.BatchNorm2d``'s outputs, input gradients and running statistics, step after step, for one edge and for a
    subset of a group's edges; 16 channels take PyTorch's kernel."""
    torch.manual_seed(0)
    ref = torch.nn.BatchNorm2d(3 * C, affine=False, momentum=momentum)
    ours = copy.deepcopy(ref)
    with torch_threads(2):
        for step in range(3):
            cl = torch.channels_last
            xs = [(torch.randn(4, C, 6, 5) * 3 + step).contiguous(memory_format=cl) for _ in range(2)]
            assert ops._matrix_is_faster(xs[0]) == (C < 16)
            xa = [x.clone().requires_grad_(True) for x in xs]
            xb = [x.clone().requires_grad_(True) for x in xs]
            # edge 1 of a group of 3, then edge 2 alone: each its own rows of the running statistics
            out = [grouped.stacked_bn(xa[0], ours, [1], C), grouped.stacked_bn(xa[1], ours, [2], C)]
            mean, var = ref.running_mean, ref.running_var
            assert mean is not None and var is not None
            # the module counts every call (momentum None: a cumulative average over its calls)
            factors = [ref.momentum or 1.0 / (2 * step + 1), ref.momentum or 1.0 / (2 * step + 2)]
            expect = [
                F.batch_norm(xb[0], mean[C : 2 * C], var[C : 2 * C], None, None, True, factors[0], ref.eps),
                F.batch_norm(xb[1], mean[2 * C :], var[2 * C :], None, None, True, factors[1], ref.eps),
            ]
            for o, e, a, b in zip(out, expect, xa, xb, strict=True):
                torch.testing.assert_close(o, e, rtol=1e-5, atol=1e-5)
                assert o.is_contiguous(memory_format=cl)
                g = torch.randn_like(o)
                (o * g).sum().backward()
                (e * g).sum().backward()
                torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(ours.running_mean, ref.running_mean)
            torch.testing.assert_close(ours.running_var, ref.running_var)
    assert ours.num_batches_tracked is not None and int(ours.num_batches_tracked) == 6
    with torch_threads(1):  # one thread: PyTorch's own kernel is the faster
        assert not ops._matrix_is_faster(torch.randn(4, 8, 6, 5).contiguous(memory_format=torch.channels_last))


@pytest.mark.parametrize(
    ("shape", "product"),
    [
        ((1024, 128), True),
        ((512, 128), True),
        ((1024, 64), True),
        ((256, 128), False),  # under 64k elements
        ((2048, 32), False),  # under 64 columns
        ((16384, 8), False),
    ],
)
def test_column_sums_equal_sum(shape: tuple[int, int], product: bool) -> None:
    """The matrix BatchNorm's column sums: ``sum(0)``'s values (to float rounding), into a given vector too; a row of
    ones times the matrix from 64 columns and 64k elements (its cached row counted), ``sum(0)`` below."""
    m = torch.randn(*shape) * 3 + 1
    ops._ONES_CACHE.clear()
    expect = m.double().sum(0).float()
    torch.testing.assert_close(ops._column_sums(m), expect, rtol=1e-5, atol=1e-4)
    out = torch.empty(2, shape[1])
    ops._column_sums(m, out=out[1])
    torch.testing.assert_close(out[1], expect, rtol=1e-5, atol=1e-4)
    assert bool(ops._ONES_CACHE) == product


@pytest.mark.usefixtures("matrix_bn_on_small_maps")
@pytest.mark.parametrize("shape", [(4, 8, 6, 5), (16, 8, 32, 32)])  # the second's column sums are products
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("track", [True, False])
def test_batch_norm_module_equals_torchs(
    shape: tuple[int, int, int, int], affine: bool, momentum: float | None, track: bool
) -> None:
    """evoray's BatchNorm2d (the matrix form for small channels-last maps on 2 threads) gives ``nn.BatchNorm2d``'s
    outputs, input, weight and bias gradients and running statistics over training steps (one whose variance is near
    eps, where a misplaced eps shows), then the same evaluation."""
    from evoray.runtime import torch_threads

    torch.manual_seed(0)
    ref = torch.nn.BatchNorm2d(8, affine=affine, momentum=momentum, track_running_stats=track)
    if affine:
        with torch.no_grad():
            ref.weight.uniform_(0.5, 2.0)
            ref.bias.normal_()
    ours = ops.BatchNorm2d(8, affine=affine, momentum=momentum, track_running_stats=track)
    ours.load_state_dict(ref.state_dict())
    with torch_threads(2):
        for scale, shift in ((2.0, 0.0), (2.0, 1.0), (3e-3, 0.0)):  # the last, a variance near eps
            x = (torch.randn(*shape) * scale + shift).contiguous(memory_format=torch.channels_last)
            assert ops._matrix_is_faster(x)
            xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
            a, b = ours(xa), ref(xb)
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
            # the gradient arrives channels-last, or (the second step) contiguous
            g = torch.randn(b.shape) if shift else torch.randn_like(b)
            assert g.is_contiguous(memory_format=torch.channels_last) == (not shift)
            (a * g).sum().backward()
            (b * g).sum().backward()
            if x.numel() < 1 << 16:
                torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-5)
            else:  # where PyTorch's kernel's own rounding shows: as close to float64 as it is, or closer
                x64 = x.double().requires_grad_(True)
                ref64 = copy.deepcopy(ref).double()
                (ref64(x64) * g.double()).sum().backward()
                assert x64.grad is not None and xa.grad is not None and xb.grad is not None
                ours_err, torch_err = ((t.double() - x64.grad).abs().max().item() for t in (xa.grad, xb.grad))
                assert ours_err <= max(torch_err, 1e-6), (ours_err, torch_err)
            if affine:
                torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-5)
                torch.testing.assert_close(ours.bias.grad, ref.bias.grad, rtol=1e-4, atol=1e-5)
        for key, value in ref.state_dict().items():
            torch.testing.assert_close(ours.state_dict()[key], value, msg=key)
        ours.eval(), ref.eval()
        torch.testing.assert_close(ours(x), ref(x))


@pytest.mark.parametrize(
    ("shape", "c_out", "bias", "threads", "conv", "into"),
    [  # conv: kernel, stride, padding
        ((64, 8, 16, 16), 8, True, 2, (1, 1, 0), True),  # the matrix product, then a matrix BatchNorm of 8 channels
        ((64, 8, 16, 16), 8, False, 2, (1, 1, 0), False),  # no bias to move
        ((64, 8, 16, 16), 16, True, 2, (1, 1, 0), False),  # 16 channels: PyTorch's BatchNorm
        ((32, 8, 16, 16), 8, True, 2, (1, 1, 0), False),  # under the matrix BatchNorm's 2^17 elements
        ((64, 8, 16, 16), 8, True, 1, (1, 1, 0), False),  # one thread: PyTorch's BatchNorm
        ((64, 8, 32, 32), 8, True, 2, (1, 1, 0), True),  # over the product's 16k pixels: PyTorch's convolution
        ((64, 8, 16, 16), 8, True, 2, (3, 2, 1), False),  # stride 2: under 2^17 elements
        ((64, 8, 32, 32), 8, True, 2, (3, 2, 1), True),  # stride 2 to 16x16: 2^17 elements
        ((64, 8, 16, 16), 8, True, 2, (3, 1, 1), True),  # 3x3, same size
        ((64, 8, 16, 16), 8, True, 2, (3, 1, 0), False),  # 3x3 without padding: under 2^17 elements
    ],
)
def test_bias_into_batch_norm_routing(
    shape: tuple[int, int, int, int], c_out: int, bias: bool, threads: int, conv: tuple[int, int, int], into: bool
) -> None:
    """Which convolutions leave their bias to the training BatchNorm after them: those of channels-last maps whose
    output takes the matrix BatchNorm."""
    k, stride, padding = conv
    x = torch.empty(shape).contiguous(memory_format=torch.channels_last)
    w, b = torch.empty(c_out, shape[1], k, k), torch.empty(c_out) if bias else None
    with torch_threads(threads):
        assert ops.bias_into_batch_norm(x, w, b, stride, padding, groups=1) == into
        assert not ops.bias_into_batch_norm(torch.empty(shape), w, b, stride, padding)


@pytest.mark.usefixtures("matrix_bn_on_small_maps")
@pytest.mark.parametrize("slots", [None, [1]])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_narrow_bias_in_the_batch_norm_equals_the_written_out_op(
    slots: list[int] | None, momentum: float | None
) -> None:
    """NAS-Bench-201's ``nor_conv_1x1`` with AutoDL's bias (8 channels) in training, its bias handed to the matrix
    BatchNorm: the written-out convolution with its bias and ``F.batch_norm``'s outputs, input and weight gradients
    and running statistics, step after step; the bias's gradient zero, where the written-out one is float noise about
    zero (batch statistics remove a per-channel constant)."""
    torch.manual_seed(0)
    C, m = 8, 1 if slots is None else 3
    op = grouped.GroupReLUConvBN(C, m, 1, 1, bias=True)
    op.bn.momentum = momentum
    assert op.bias is not None and op.bn.running_mean is not None and op.bn.running_var is not None
    rows = slice(None) if slots is None else slice(slots[0] * C, (slots[0] + 1) * C)
    weight, bias = op.weight.detach()[rows].clone().requires_grad_(True), op.bias.detach()[rows].clone()
    bias.requires_grad_(True)
    mean, var = op.bn.running_mean[rows].clone(), op.bn.running_var[rows].clone()
    with torch_threads(2):
        for step in range(3):
            x = (torch.randn(4, C, 6, 5) * 2 + step).contiguous(memory_format=torch.channels_last)
            assert ops.bias_into_batch_norm(x, weight, bias)
            xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
            a = op(xa, slots)
            factor = momentum or 1.0 / (step + 1)
            b = F.batch_norm(F.conv2d(xb, weight, bias), mean, var, None, None, True, factor, op.bn.eps)
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
            assert a.is_contiguous(memory_format=torch.channels_last)
            g = torch.randn_like(b)
            (a * g).sum().backward()
            (b * g).sum().backward()
            torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-5)
            assert op.weight.grad is not None and op.bias.grad is not None and weight.grad is not None
            torch.testing.assert_close(op.weight.grad[rows], weight.grad, rtol=1e-4, atol=1e-5)
            assert bias.grad is not None and float(bias.grad.abs().max()) < 1e-4  # float noise in the written-out op
            assert not op.bias.grad.any()
            torch.testing.assert_close(op.bn.running_mean[rows], mean)
            torch.testing.assert_close(op.bn.running_var[rows], var)


@pytest.mark.parametrize(("start", "step"), [(1, 1), (0, 2), (1, 2)])
def test_crop_equals_slicing_and_keeps_the_gradient_channels_last(start: int, step: int) -> None:
    """The strided crops of the reductions (factorized reduce's shifted half, a stride-2 dilated conv's even-even
    component) give the slice's values and gradient, the gradient of a channels-last map in channels-last."""
    x = torch.randn(2, 3, 6, 5).contiguous(memory_format=torch.channels_last)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    a, b = ops.crop(xa, start, step), xb[:, :, start::step, start::step]
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    g = torch.randn_like(b)
    (a * g).sum().backward()
    (b * g).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=0, atol=0)
    assert xa.grad is not None and xa.grad.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("mode", WEIGHTINGS.names())
@pytest.mark.parametrize("space_name", SPACES.names())
def test_channels_last_equals_nchw(space_name: str, mode: str) -> None:
    """A training step's outputs and gradients (weights and alphas), and the evaluation outputs, in channels-last
    memory format equal the NCHW ones; evaluation under inference mode (the no-gradient fast paths) equals the
    evaluation with gradients on (the plain ops)."""
    plain = _supernet(space_name, mode)
    fast = copy.deepcopy(plain).to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 8, 8)
    outs, grads = [], []
    for net, xi in ((plain, x), (fast, x.contiguous(memory_format=torch.channels_last))):
        net.train()
        torch.manual_seed(5)  # the same Gumbel noise for both
        out = net(xi)
        outs.append(out)
        grads.append(torch.autograd.grad(out.square().sum(), list(net.parameters()), allow_unused=True))
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-5)
    # the float32 rounding floor of this backward: a millionth of the whole gradient's norm
    floor = 1e-6 * float(torch.stack([g.norm() for g in grads[0] if g is not None]).norm())
    for name_g, (a, b) in zip([n for n, _ in plain.named_parameters()], zip(*grads)):
        assert (a is None) == (b is None), name_g
        if a is not None:  # floating-point reordering: compared as a whole, relative to the gradient's size (a
            # conv bias before a batch-statistics BN has a true gradient of zero: only rounding noise on both sides)
            err = float((b - a).norm())
            assert err <= 1e-4 * float(a.norm()) + max(1e-5, floor), f"{name_g}: gradient difference {err:.2e}"
    evals = []
    for net, xi, inference in ((plain, x, False), (fast, x.contiguous(memory_format=torch.channels_last), True)):
        net.eval()
        torch.manual_seed(6)
        if inference:
            with torch.inference_mode():
                evals.append(net(xi).clone())
        else:
            evals.append(net(xi.clone().requires_grad_(True)).detach())
    torch.testing.assert_close(evals[1], evals[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", WEIGHTINGS.names())
@pytest.mark.parametrize("space_name", SPACES.names())
def test_cell_outputs_stay_channels_last(space_name: str, mode: str) -> None:
    """In channels-last format every cell's output, and every edge op's, keeps the channels innermost (channels-last,
    or a channel slice of such a tensor), in training and in evaluation: one NCHW state would make the next cells'
    convolutions convert it or run the NCHW kernels (a reduction cell's factorized-reduce skips did, until their
    halves were concatenated instead of reshaped)."""
    net = _supernet(space_name, mode).to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    seen: list[str] = []

    def check(module: torch.nn.Module, args: object, out: object) -> None:
        for t in out if isinstance(out, (list, tuple)) else [out]:
            if isinstance(t, torch.Tensor) and t.dim() == 4 and min(t.shape[1:]) > 1:
                seen.append(type(module).__name__)
                assert t.stride(1) == 1, f"{type(module).__name__} output {tuple(t.shape)} strides {t.stride()}"

    for module in net.modules():
        if isinstance(module, (grouped.GroupOp, SearchCell)):
            module.register_forward_hook(check)
    for training in (True, False):
        net.train(training)
        torch.manual_seed(5)
        with torch.set_grad_enabled(training):
            net(x)
    assert "SearchCell" in seen


@pytest.mark.parametrize("mode", ["softmax", "gumbel-hard"])
@pytest.mark.parametrize("space_name", SPACES.names())
def test_batchnorm_folded_into_the_convolution_in_evaluation(space_name: str, mode: str, monkeypatch) -> None:
    """Evaluation with each op's BatchNorm folded into its convolution equals convolution then BatchNorm; under
    gumbel-hard the folds take the running statistics of a subset of a group's edges (their rows)."""
    net = _supernet(space_name, mode)
    x = torch.randn(4, 3, 8, 8)
    net.train()
    for _ in range(3):  # running statistics away from their initial values
        net(x)
    net.eval()
    seeds = range(3, 4) if mode == "softmax" else range(3, 11)  # the same draws for the noise op and the paths
    calls: list[list[int] | None] = []  # the slots of every folded convolution
    real = grouped.conv_bn

    def counted(*a: Any, **k: Any) -> torch.Tensor:
        calls.append(a[4])
        return real(*a, **k)

    monkeypatch.setattr(grouped, "conv_bn", counted)
    folded = []
    for seed in seeds:
        torch.manual_seed(seed)
        with torch.inference_mode():
            folded.append(net(x))
    assert calls  # the folded path ran
    folding = (grouped.GroupSepConv, grouped.GroupDilConv, grouped.GroupReLUConvBN)
    shared = any(
        len(g.members[name]) > 1 and isinstance(op, folding)
        for g in net.modules()
        if isinstance(g, EdgeGroup)
        for name, op in g.ops.items()
    )
    if mode == "gumbel-hard" and shared:  # where edges share an op's tensors, some folds read rows past the first
        assert any(slots is not None and slots != list(range(len(slots))) for slots in calls), calls

    def unfolded(x, weight, bias, bn, slots, C, **conv):  # type: ignore[no-untyped-def]
        return grouped.stacked_bn(F.conv2d(x, weight, bias, **conv), bn, slots, C)

    monkeypatch.setattr(grouped, "conv_bn", unfolded)
    for seed, out in zip(seeds, folded, strict=True):
        torch.manual_seed(seed)
        with torch.inference_mode():
            plain = net(x)
        torch.testing.assert_close(out, plain, rtol=1e-4, atol=1e-5)


def _written_out(weights: dict[str, EdgeWeights]) -> dict[str, EdgeWeights]:
    """The same edge weights without the single-path form: every edge's ``w * op(x)`` and zero terms written out."""
    return {ct: dataclasses.replace(ew, single_path=False) for ct, ew in weights.items()}


@pytest.mark.parametrize("path", ["gumbel-hard", "random", "given cell"])
@pytest.mark.parametrize("space_name", SPACES.names())
def test_single_path_node_sum_equals_the_written_out_edges(space_name: str, path: str) -> None:
    """A single path computed node by node (``evoray.nn.straight``: the ops' outputs summed, the straight-through
    weights' gradients as dot products) gives the outputs and gradients, weights and alphas, of ``w * op(x)`` (plus the
    zero-valued weights of the ops not run, on NAS-Bench-201) written out edge by edge."""
    net = _supernet(space_name, "gumbel-hard")
    net.tau = 0.7
    space = net.space
    net.train()
    x = torch.randn(4, 3, 8, 8)
    torch.manual_seed(11)
    if path == "gumbel-hard":
        weights = net.edge_weights()
    elif path == "random":
        weights = {ct: random_path(space, ct) for ct in space.cell_types}
    else:
        genotype = random_genotype(space, np.random.default_rng(3))
        weights = {ct: path_weights(space, ct, genotype.cell(ct)) for ct in space.cell_types}
    assert all(ew.single_path for ew in weights.values())
    params = list(net.parameters())
    results = []
    for ws in (weights, _written_out(weights)):
        state = copy.deepcopy(net.state_dict())
        torch.manual_seed(5)  # the same noise ops
        out = net(x, ws)
        grads = torch.autograd.grad(out.square().sum(), params, allow_unused=True, retain_graph=True)
        results.append((out, grads))
        net.load_state_dict(state)  # the running statistics as before
    (out, grads), (out_ref, grads_ref) = results
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-6)
    for (name, _), a, b in zip(net.named_parameters(), grads, grads_ref, strict=True):
        assert (a is None) == (b is None) or float(torch.as_tensor(a if a is not None else b).abs().max()) == 0, name
        if a is not None and b is not None:
            err = float((a - b).norm())
            assert err <= 1e-5 * float(b.norm()) + 1e-6, f"{name}: gradient difference {err:.2e}"
    if path == "gumbel-hard":  # the alphas' gradient is the point of the straight-through weights: not all zero
        assert any(float(g.abs().sum()) > 0 for g in grads[-len(net.arch_parameters()) :] if g is not None)


@pytest.mark.parametrize("space_name", ["darts", "nb201"])
def test_a_backward_pass_that_skips_the_alphas_leaves_their_gradient_alone(space_name: str) -> None:
    """The nodes of a sampled path leave the weights' gradient parts only in a backward pass that reaches the weights:
    a gradient of the input alone, then of the alphas on the same graph, gives the alphas what one pass gives them;
    and the parts are cleared after each pass (a second pass gives the same again, not twice as much)."""
    net = _supernet(space_name, "gumbel-hard")
    net.train()
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    alphas = net.arch_parameters()
    torch.manual_seed(4)
    out = net(x).square().sum()
    want = torch.autograd.grad(out, alphas, retain_graph=True)
    assert any(float(g.abs().sum()) > 0 for g in want)
    torch.autograd.grad(out, [x], retain_graph=True)
    got = torch.autograd.grad(out, alphas, retain_graph=True)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def _dot_cases() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Pairs of maps in the layouts a node's outputs and gradient take: dense in either memory format, dense at an
    offset into their storage, channel slices of a grouped op's output (not dense), and mixed formats."""
    torch.manual_seed(0)
    cl = torch.channels_last
    a, b = torch.randn(3, 6, 5, 4), torch.randn(3, 6, 5, 4)
    wide_a, wide_b = torch.randn(1, 12, 5, 4), torch.randn(1, 12, 5, 4)
    wide_cl_a, wide_cl_b = a.repeat(1, 2, 1, 1).contiguous(memory_format=cl), b.repeat(1, 2, 1, 1).to(memory_format=cl)
    return {
        "contiguous": (a, b),
        "channels-last": (a.contiguous(memory_format=cl), b.contiguous(memory_format=cl)),
        "batch rows at an offset": (a[1:], b[1:]),
        "channels at an offset (one image)": (wide_a[:, 6:], wide_b[:, 6:]),
        "channel slices of channels-last maps": (wide_cl_a[:, 6:], wide_cl_b[:, :6]),
        "mixed formats": (a, b.contiguous(memory_format=cl)),
        "channels-last at an offset": (a.contiguous(memory_format=cl)[1:], b.contiguous(memory_format=cl)[1:]),
    }


@pytest.mark.parametrize("case", list(_dot_cases()))
def test_node_sum_dot_reads_each_pair_of_elements_once(case: str) -> None:
    """``straight.dot`` (the straight-through weights' gradient, read from the maps' memory where they are dense in
    the same format) equals the elementwise product summed, in every layout a node's tensors take."""
    from evoray.nn.straight import dot

    a, b = _dot_cases()[case]
    expected = float((a.double() * b.double()).sum())
    assert abs(float(dot(a, b)) - expected) <= 1e-5 * float(a.double().abs().mul(b.double().abs()).sum())


def test_the_activated_input_is_tiled_once_for_every_grouped_convolution(monkeypatch: pytest.MonkeyPatch) -> None:
    """A group's separable and dilated convolutions (four ops on the DARTS space, all edges each) read one tiling of
    the activated input, made once per group, not one each."""
    from evoray.nn import supernet

    net = _supernet("darts", "softmax")
    made: list[int] = []

    def counted(x: torch.Tensor, n: int) -> torch.Tensor:
        made.append(n)
        return tile_channels(x, n)

    monkeypatch.setattr(supernet, "tile_channels", counted)
    monkeypatch.setattr(grouped, "tile_channels", lambda x, n: pytest.fail("a grouped op tiled its own input"))
    net(torch.randn(2, 3, 8, 8))
    groups = [g for cell in net.cells if isinstance(cell, SearchCell) for g in cell.groups if isinstance(g, EdgeGroup)]
    groups = [g for g in groups if len(g.edge_ids) > 1]
    # per group of m > 1 edges: the activated input once, and the three shared ops' outputs (two pools, identity)
    # in the normal cells (a reduction cell's skip_connect is a FactorizedReduce, per edge)
    assert made.count(4) >= 2 and len(made) <= 4 * len(groups), made


@pytest.mark.parametrize(
    ("shape", "c_out", "bias", "matrix"),
    [
        ((64, 16, 8, 8), 16, True, True),  # up to 16k pixels, a bias with 16 or more output channels
        ((64, 8, 16, 16), 8, False, True),
        ((64, 8, 16, 16), 8, True, False),  # a bias of fewer than 16 channels: the convolution
        ((64, 8, 16, 17), 8, False, False),  # over 16k pixels
        ((2, 3, 4, 4), 5, False, True),
    ],
)
def test_pointwise_matmul_routing(shape: tuple[int, int, int, int], c_out: int, bias: bool, matrix: bool) -> None:
    """Which 1x1 convolutions run as a matrix product: small channels-last CPU maps in float32, one group, a bias only
    with 16 or more output channels; never a contiguous map, a wider kernel or a grouped weight."""
    x = torch.empty(shape).contiguous(memory_format=torch.channels_last)
    w, b = torch.empty(c_out, shape[1], 1, 1), torch.empty(c_out) if bias else None
    assert ops._matmul_is_faster(x, w, b) == matrix
    assert not ops._matmul_is_faster(torch.empty(shape), w, b)
    assert not ops._matmul_is_faster(x, torch.empty(c_out, shape[1], 3, 3), b)
    if shape[1] % 2 == 0:
        assert not ops._matmul_is_faster(x, torch.empty(c_out, shape[1] // 2, 1, 1), b)
    assert not ops._matmul_is_faster(x.double(), w.double(), None if b is None else b.double())


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(("kernel", "stride", "padding"), [(1, 1, 0), (1, 2, 0), (3, 1, 1)])
def test_conv2d_module_equals_nn_conv2d(kernel: int, stride: int, padding: int, bias: bool, channels_last: bool):
    """evoray's ``Conv2d`` (the matrix product for a small channels-last 1x1, else PyTorch's) has ``nn.Conv2d``'s
    parameters and state dict and gives its output, in the input's memory format, and its gradients."""
    torch.manual_seed(kernel + stride + bias)
    ref = torch.nn.Conv2d(6, 16, kernel, stride=stride, padding=padding, bias=bias)
    conv = ops.Conv2d(6, 16, kernel, stride=stride, padding=padding, bias=bias)
    conv.load_state_dict(ref.state_dict())
    assert conv.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(3, 6, 5, 4)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    assert ops._matmul_is_faster(x, conv.weight, conv.bias) == (kernel == 1 and channels_last)  # stride 1 only
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out, want = conv(xa), ref(xb)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last
    g = torch.randn_like(want)
    got = torch.autograd.grad(out, (xa, *conv.parameters()), g)
    expected = torch.autograd.grad(want, (xb, *ref.parameters()), g)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize(
    "k,stride,dilation", [(3, 1, 1), (5, 1, 1), (3, 2, 1), (3, 1, 2), (5, 1, 2), (3, 2, 2), (5, 2, 2)]
)
@pytest.mark.parametrize("side", [1, 2, 3, 4, 7, 8])
def test_depthwise_conv_routes_equal_conv2d(side: int, k: int, stride: int, dilation: int, grad: bool) -> None:
    """Every route of ``depthwise_conv`` (polyphase, even-even component, cropped taps, dilated or not) gives
    ``F.conv2d``'s output, and with gradients on its input and weight gradients, on maps smaller than the kernel."""
    torch.manual_seed(side)
    padding = dilation * (k // 2)
    x = torch.randn(2, 3, side, side + side % 2).contiguous(memory_format=torch.channels_last)  # odd and even maps
    w = torch.randn(3, 1, k, k)
    ref_x, ref_w = x.clone().requires_grad_(grad), w.clone().requires_grad_(grad)
    ref = F.conv2d(ref_x, ref_w, stride=stride, padding=padding, dilation=dilation, groups=3)
    if not grad:
        with torch.inference_mode():
            out = depthwise_conv(x, w, stride, padding, dilation)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        return
    xg, wg = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    out = depthwise_conv(xg, wg, stride, padding, dilation)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(ref)
    got = torch.autograd.grad(out, (xg, wg), g)
    want = torch.autograd.grad(ref, (ref_x, ref_w), g)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("slots", [None, [1], [0, 2]])
def test_shared_pool_keeps_each_edges_batchnorm_statistics(slots: list[int] | None) -> None:
    """A pool shared by three edges, normalised once: the output and every requested edge's running statistics equal
    those of that edge's own ``BatchNorm2d``; the other edges' statistics are left alone."""
    torch.manual_seed(0)
    pool = grouped.SharedPool(4, 3, "max", 1, bn=True).train()
    edges = [torch.nn.BatchNorm2d(4, affine=False).train() for _ in range(3)]
    assert pool.bn is not None and pool.bn.running_mean is not None and pool.bn.running_var is not None
    with torch.no_grad():  # distinct starting statistics per edge
        pool.bn.running_mean.uniform_(-1, 1)
        pool.bn.running_var.uniform_(0.5, 2)
        for s, bn in enumerate(edges):
            assert bn.running_mean is not None and bn.running_var is not None
            bn.running_mean.copy_(pool.bn.running_mean[4 * s : 4 * s + 4])
            bn.running_var.copy_(pool.bn.running_var[4 * s : 4 * s + 4])
    before = pool.bn.running_mean.clone(), pool.bn.running_var.clone()
    for _ in range(2):
        x = torch.randn(5, 4, 6, 6) * 3 + 1
        out = pool(x, slots)
        for s in slots if slots is not None else range(3):
            torch.testing.assert_close(out, edges[s](F.max_pool2d(x, 3, 1, 1)), rtol=1e-5, atol=1e-5)
    for s in range(3):
        rows = slice(4 * s, 4 * s + 4)
        if slots is None or s in slots:
            torch.testing.assert_close(pool.bn.running_mean[rows], edges[s].running_mean, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(pool.bn.running_var[rows], edges[s].running_var, rtol=1e-5, atol=1e-6)
        else:
            assert torch.equal(pool.bn.running_mean[rows], before[0][rows])
            assert torch.equal(pool.bn.running_var[rows], before[1][rows])


@pytest.mark.usefixtures("matrix_bn_on_small_maps")
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("slots", [None, [1], [0, 2]])
@pytest.mark.parametrize("C", [2, 8])
def test_stacked_batchnorm_equals_each_edges_batchnorm(C: int, slots: list[int] | None, momentum, threads: int):
    """The per-edge BatchNorms of a grouped op (``stacked_bn``): output, input gradient and every requested edge's
    running statistics (its momentum or, with momentum None, the cumulative average of BatchNorm recalibration) equal
    those of that edge's own ``BatchNorm2d``; on 2 threads a map of under 16 channels goes through the matrix
    BatchNorm (``ops._MatrixBatchNorm``), on 1 through PyTorch's."""
    with torch_threads(threads):
        _check_stacked_batchnorm(C, slots, momentum, threads)


def _check_stacked_batchnorm(C: int, slots: list[int] | None, momentum: float | None, threads: int) -> None:
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(3 * C, affine=False, momentum=momentum).train()
    edges = [torch.nn.BatchNorm2d(C, affine=False, momentum=momentum).train() for _ in range(3)]
    assert bn.running_mean is not None and bn.running_var is not None
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        for s, e in enumerate(edges):
            assert e.running_mean is not None and e.running_var is not None
            e.running_mean.copy_(bn.running_mean[C * s : C * s + C])
            e.running_var.copy_(bn.running_var[C * s : C * s + C])
    chosen = list(range(3)) if slots is None else slots
    for _ in range(3):
        x = (torch.randn(4, len(chosen) * C, 6, 6) * 3 + 1).contiguous(memory_format=torch.channels_last)
        x.requires_grad_(True)
        assert ops._matrix_is_faster(x) == (threads > 1 and x.shape[1] < 16)
        out = grouped.stacked_bn(x, bn, slots, C)
        assert out.is_contiguous(memory_format=torch.channels_last)
        g = torch.randn_like(out)
        (gx,) = torch.autograd.grad(out, x, g)
        for i, s in enumerate(chosen):
            xi = x.detach()[:, i * C : (i + 1) * C].clone().requires_grad_(True)
            ref = edges[s](xi)
            torch.testing.assert_close(out[:, i * C : (i + 1) * C], ref, rtol=1e-5, atol=1e-5)
            (gref,) = torch.autograd.grad(ref, xi, g[:, i * C : (i + 1) * C])
            torch.testing.assert_close(gx[:, i * C : (i + 1) * C], gref, rtol=1e-4, atol=1e-5)
    for s in chosen:
        torch.testing.assert_close(bn.running_mean[C * s : C * s + C], edges[s].running_mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(bn.running_var[C * s : C * s + C], edges[s].running_var, rtol=1e-5, atol=1e-6)


_FAULTS = """
import resource, sys, torch
from evoray.runtime import RuntimeConfig, apply_runtime
apply_runtime(RuntimeConfig(device="cpu", reuse_memory=sys.argv[1] == "1"))
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
x = torch.randn(10_000_000)  # 40 MB
def rounds(n):
    for _ in range(n):
        y = x * 2
        z = y + x
        w = torch.cat([z, y])
        del y, z, w
rounds(3)  # warm-up
before = faults()
rounds(10)
print(faults() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the allocator setting is glibc's (Linux)")
def test_reused_memory_does_not_fault_in_every_new_tensor() -> None:
    """``runtime.reuse_memory`` (on by default): temporaries of 40-80 MB reuse the memory freed by the ones before
    instead of faulting in 10,000-20,000 fresh pages each."""
    counts = {}
    for reuse in ("0", "1"):
        run = subprocess.run([sys.executable, "-c", _FAULTS, reuse], capture_output=True, text=True, check=True)
        counts[reuse] = int(run.stdout.split()[-1])
    assert counts["0"] > 200_000, counts  # the plain allocator maps and faults in every temporary anew
    assert counts["1"] < counts["0"] / 5, counts


# -- flat SGD -----------------------------------------------------------------------------------------------------


def _flat_model() -> torch.nn.Sequential:
    """Tensors of the kinds a supernet holds: channels-last conv weights (with 1x1 kernels, whose size-1 dimensions'
    strides vary), vectors and a matrix."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3, padding=1),
        torch.nn.Conv2d(6, 6, 1),
        torch.nn.Flatten(),
        torch.nn.Linear(6 * 4 * 4, 5),
    )
    return net.to(memory_format=torch.channels_last)


class _SGDArgs(TypedDict, total=False):
    """Keyword arguments given alike to FlatSGD and torch.optim.SGD."""

    lr: float
    momentum: float
    nesterov: bool
    weight_decay: float
    dampening: float
    foreach: bool


@pytest.mark.parametrize(
    ("momentum", "nesterov", "decay", "dampening"),
    [(0.9, True, 5e-4, 0.0), (0.9, False, 0.0, 0.1), (0.0, False, 3e-4, 0.0)],
)
def test_flat_sgd_equals_sgd(momentum: float, nesterov: bool, decay: float, dampening: float) -> None:
    """FlatSGD (gradients zeroed between steps) moves the parameters and momentum buffers as torch.optim.SGD does,
    before and after they move into its flat buffers (the last layer gets no gradient for the first steps, as an op
    not yet sampled), and clipping its flat gradient equals clipping each parameter's."""
    from evoray.optim import FlatSGD, clip_gradient_tensors, clip_gradients, weight_gradients

    nets = [_flat_model(), _flat_model()]
    kw: _SGDArgs = {
        "lr": 0.1,
        "momentum": momentum,
        "nesterov": nesterov,
        "weight_decay": decay,
        "dampening": dampening,
        "foreach": True,
    }
    flat_opt = FlatSGD(nets[0].parameters(), **kw)
    opts = [flat_opt, torch.optim.SGD(nets[1].parameters(), **kw)]
    torch.manual_seed(1)
    x = torch.randn(8, 3, 4, 4).to(memory_format=torch.channels_last)
    y = torch.randint(0, 5, (8,))
    for step in range(6):
        for net, opt in zip(nets, opts):
            opt.zero_grad(set_to_none=False)
            features = net[:3](x)
            out = net[3](features) if step >= 2 else features[:, :5]  # the Linear joins at step 2
            (F.cross_entropy(out, y) * 50).backward()  # large enough to be clipped
            if opt is opts[0]:
                clip_gradient_tensors(weight_gradients(opt, list(net.parameters())), 1.0)
            else:
                clip_gradients(list(net.parameters()), 1.0)
            opt.step()
        assert (flat_opt._flat is not None) == (step >= 2)  # flat once every parameter had a gradient
        for a, b in zip(nets[0].parameters(), nets[1].parameters()):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
            assert opts[0].state[a].keys() == opts[1].state[b].keys()
            if momentum and "momentum_buffer" in opts[1].state[b]:
                torch.testing.assert_close(
                    opts[0].state[a]["momentum_buffer"], opts[1].state[b]["momentum_buffer"], rtol=1e-6, atol=1e-7
                )
    flat = flat_opt._flat
    assert flat is not None and all(  # the parameters are views of the flat buffer
        p.untyped_storage().data_ptr() == flat.data.untyped_storage().data_ptr() for p in nets[0].parameters()
    )
    assert len(weight_gradients(opts[0], list(nets[0].parameters()))) == 1


def test_flat_sgd_state_dict_is_sgds_and_resumes() -> None:
    """FlatSGD's state dict is SGD's (per parameter): loaded into either optimiser, the next steps agree."""
    from evoray.optim import FlatSGD

    def run(net: torch.nn.Module, opt: torch.optim.SGD, steps: int) -> None:
        torch.manual_seed(2)
        for _ in range(steps):
            x = torch.randn(8, 3, 4, 4).to(memory_format=torch.channels_last)
            opt.zero_grad(set_to_none=False)
            F.cross_entropy(net(x), torch.randint(0, 5, (8,))).backward()
            opt.step()

    kw: _SGDArgs = {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "foreach": True}
    net = _flat_model()
    opt = FlatSGD(net.parameters(), **kw)
    run(net, opt, 3)
    assert opt._flat is not None
    state, weights = copy.deepcopy(opt.state_dict()), copy.deepcopy(net.state_dict())
    assert state["state"].keys() == {i for i, _ in enumerate(net.parameters())}
    results = []
    for kind in (FlatSGD, torch.optim.SGD):
        other = _flat_model()
        other.load_state_dict(weights)
        o = kind(other.parameters(), **kw)
        o.load_state_dict(copy.deepcopy(state))  # SGD steps the loaded buffers in place
        run(other, o, 3)
        results.append([p.detach().clone() for p in other.parameters()])
    run(net, opt, 3)  # the original, uninterrupted
    for a, b, c in zip(*results, net.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(a, c.detach(), rtol=1e-6, atol=1e-7)


def test_flat_sgd_follows_gradients_assigned_from_outside() -> None:
    """A gradient replaced from outside (as an all-reduce assigns it) is still the one applied: FlatSGD notices and
    returns to the per-parameter update; freeing gradients does too."""
    from evoray.optim import FlatSGD

    nets = [_flat_model(), _flat_model()]
    kw: _SGDArgs = {"lr": 0.1, "momentum": 0.9, "foreach": True}
    flat_opt = FlatSGD(nets[0].parameters(), **kw)
    opts = [flat_opt, torch.optim.SGD(nets[1].parameters(), **kw)]
    x = torch.randn(8, 3, 4, 4).to(memory_format=torch.channels_last)
    for step in range(4):
        for net, opt in zip(nets, opts):
            opt.zero_grad(set_to_none=False)
            net(x).square().mean().backward()
            if step == 2:
                for p in net.parameters():
                    assert p.grad is not None
                    p.grad = p.grad * 2  # a new tensor
            opt.step()
        for a, b in zip(nets[0].parameters(), nets[1].parameters()):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert flat_opt._flat is None
    freed = FlatSGD(_flat_model().parameters(), **kw)
    freed.zero_grad(set_to_none=True)
    assert freed._off


def test_flat_sgd_steps_at_the_schedules_rate_and_follows_replaced_parameters() -> None:
    """FlatSGD reads each step's learning rate from its parameter group (a schedule changes it), and a parameter
    whose data is replaced from outside is still the one stepped (FlatSGD returns to the per-parameter update)."""
    from evoray.optim import FlatSGD

    nets = [_flat_model(), _flat_model()]
    kw: _SGDArgs = {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "foreach": True}
    flat_opt = FlatSGD(nets[0].parameters(), **kw)
    opts = [flat_opt, torch.optim.SGD(nets[1].parameters(), **kw)]
    schedules = [torch.optim.lr_scheduler.CosineAnnealingLR(opt, 4, eta_min=0.001) for opt in opts]
    x = torch.randn(8, 3, 4, 4).to(memory_format=torch.channels_last)
    for step in range(6):
        for net, opt, schedule in zip(nets, opts, schedules):
            if step == 4:
                bias = list(net.parameters())[1]  # the first convolution's
                bias.data = bias.data.clone()  # a new tensor
            opt.zero_grad(set_to_none=False)
            net(x).square().mean().backward()
            opt.step()
            schedule.step()
        assert (flat_opt._flat is not None) == (step < 4)  # flat after the first step, until step 4
        for a, b in zip(nets[0].parameters(), nets[1].parameters()):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def _zeroed_gdas(grad_clip: float) -> SearchSettings:
    """A tiny GDAS search on NAS-Bench-201 in its paper's optimiser setting (zeroed gradients, Nesterov, clipping over
    weights and alphas)."""
    return config_from_dict(
        SearchConfig,
        {
            "searcher": "gdas",
            "supernet": {"space": "nb201", "init_channels": 4, "layers": 1},
            "data": {"dataset": "digits", "batch_size": 16, "augment": False, "limit_train": 64},
            "optim": {"keep_zero_grads": True, "clip_all": True, "nesterov": True, "grad_clip": grad_clip},
        },
    )


def test_gdas_with_flat_sgd_equals_per_parameter_sgd() -> None:
    """A GDAS search with zeroed gradients (its paper setting) steps exactly the same weights and alphas with FlatSGD
    as with torch.optim.SGD, before and after the flat buffers hold every weight (unclipped here: the flat norm's
    rounding differs from the per-tensor norms', and 40 steps amplify that; clipping is compared step by step in
    ``test_flat_sgd_equals_sgd``)."""
    from evoray.optim import build_sgd

    cfg = _zeroed_gdas(grad_clip=0.0)
    runs, engaged = [], 0
    for flat in (True, False):
        s = SEARCHERS.get("gdas")(cfg, torch.device("cpu"))
        if not flat:
            s.w_optimizer = build_sgd(s.weights, cfg.optim)
        assert (type(s.w_optimizer).__name__ == "FlatSGD") == flat
        s.begin_epoch()
        x, y = next(iter(s.data.train))
        for step in range(40):
            torch.manual_seed(step)
            s.step(x, y, x, y)
            engaged += flat and s.w_optimizer._flat is not None  # type: ignore[attr-defined]
        runs.append([p.detach().clone() for p in s.weights + s.net.arch_parameters()])
    assert engaged >= 10, engaged  # the flat update ran for the last steps at least
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_gdas_with_flat_sgd_resumes_from_its_checkpoint() -> None:
    """A GDAS searcher saved (as a search trial saves it, torch.save) while its weights live in FlatSGD's buffers
    resumes to the same weights as the uninterrupted run (the weights that held a zeroed gradient keep getting weight
    decay and momentum after the resume, and the alphas' last gradient still counts in the clipping norm), and its
    checkpoint stores each buffer once."""
    import io

    cfg = _zeroed_gdas(grad_clip=0.5)
    s = SEARCHERS.get("gdas")(cfg, torch.device("cpu"))
    s.begin_epoch()
    x, y = next(iter(s.data.train))
    step = 0
    while s.w_optimizer._flat is None:  # type: ignore[attr-defined]
        torch.manual_seed(step)
        s.step(x, y, x, y)
        step += 1
        assert step < 200
    buf = io.BytesIO()
    torch.save(s.state_dict(), buf)
    weights = sum(p.numel() for p in s.weights) * 4
    assert buf.tell() < 4 * weights + 200_000  # weights, momentum, BN statistics: nothing stored once per view
    resumed = SEARCHERS.get("gdas")(cfg, torch.device("cpu"))
    buf.seek(0)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    assert [p.grad is None for p in s.weights] == [p.grad is None for p in resumed.weights]
    for a, b in zip(s.net.arch_parameters(), resumed.net.arch_parameters()):
        assert a.grad is not None and b.grad is not None and torch.equal(a.grad, b.grad)
    for searcher in (s, resumed):
        for k in range(step, step + 5):
            torch.manual_seed(k)
            searcher.step(x, y, x, y)
    assert resumed.w_optimizer._flat is not None  # type: ignore[attr-defined]
    for a, b in zip(s.weights + s.net.arch_parameters(), resumed.weights + resumed.net.arch_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
