"""Every speed lever computes what the plain path computes: the same outputs and gradients, on every space and in
every weighting mode (channels-last memory format, the memory-format-keeping channel tiling, the no-gradient max
pool)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from evoray.nn import grouped
from evoray.nn.grouped import tile_channels
from evoray.nn.ops import max_pool3x3
from evoray.nn.supernet import DartsSupernet, NB201Supernet, Supernet
from evoray.nn.weighting import WEIGHTINGS
from evoray.spaces import SPACES, get_space


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
    for name_g, (a, b) in zip([n for n, _ in plain.named_parameters()], zip(*grads)):
        assert (a is None) == (b is None), name_g
        if a is not None:  # floating-point reordering: compared as a whole, relative to the gradient's size (a
            # conv bias before a batch-statistics BN has a true gradient of zero: only rounding noise on both sides)
            err = float((b - a).norm())
            assert err <= 1e-4 * float(a.norm()) + 1e-5, f"{name_g}: gradient difference {err:.2e}"
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


@pytest.mark.parametrize("space_name", SPACES.names())
def test_batchnorm_folded_into_the_convolution_in_evaluation(space_name: str, monkeypatch) -> None:
    """Evaluation with each op's BatchNorm folded into its convolution equals convolution then BatchNorm."""
    net = _supernet(space_name, "softmax")
    x = torch.randn(4, 3, 8, 8)
    net.train()
    for _ in range(3):  # running statistics away from their initial values
        net(x)
    net.eval()
    calls = []
    real = grouped.conv_bn
    monkeypatch.setattr(grouped, "conv_bn", lambda *a, **k: calls.append(1) or real(*a, **k))
    torch.manual_seed(3)  # the same draws for the noise op
    with torch.inference_mode():
        folded = net(x)
    assert calls  # the folded path ran

    def unfolded(x, weight, bias, bn, slots, C, **conv):  # type: ignore[no-untyped-def]
        return grouped.stacked_bn(F.conv2d(x, weight, bias, **conv), bn, slots, C)

    monkeypatch.setattr(grouped, "conv_bn", unfolded)
    torch.manual_seed(3)
    with torch.inference_mode():
        plain = net(x)
    torch.testing.assert_close(folded, plain, rtol=1e-4, atol=1e-5)
