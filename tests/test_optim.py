"""The weights' optimiser: SGD built from its config, the per-epoch schedules, and clipping as torch's."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from evoray.optim import FlatSGD, OptimConfig, build_schedule, build_sgd, clip_gradient_tensors, clip_gradients


def _params(scale: float = 1.0) -> list[nn.Parameter]:
    """A matrix and a vector with seeded values and gradients (``scale`` times a standard normal)."""
    g = torch.Generator().manual_seed(0)
    params = [nn.Parameter(torch.randn(3, 4, generator=g)), nn.Parameter(torch.randn(5, generator=g))]
    for p in params:
        p.grad = scale * torch.randn(p.shape, generator=g)
    return params


def test_defaults_are_evnas() -> None:
    """EvNAS trains the shared weights with SGD: lr 0.025 cosine to 0.001, momentum 0.9, weight decay 3e-4, clip 5."""
    o = OptimConfig()
    assert (o.lr, o.lr_min, o.schedule, o.momentum, o.nesterov) == (0.025, 0.001, "cosine", 0.9, False)
    assert (o.weight_decay, o.grad_clip, o.lr_step_at_start, o.keep_zero_grads) == (3e-4, 5.0, False, False)


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize(
    ("flat", "keep_zero_grads", "kind"), [(False, True, "SGD"), (True, False, "SGD"), (True, True, "FlatSGD")]
)
def test_build_sgd_takes_every_setting_from_the_config(
    nesterov: bool, flat: bool, keep_zero_grads: bool, kind: str
) -> None:
    cfg = OptimConfig(lr=0.1, momentum=0.8, weight_decay=1e-3, nesterov=nesterov, keep_zero_grads=keep_zero_grads)
    opt = build_sgd(_params(), cfg, flat=flat)
    assert type(opt).__name__ == kind  # FlatSGD only where gradients are zeroed, not freed
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.1, 0.8, 1e-3)
    assert (group["nesterov"], group["dampening"], group["foreach"]) == (nesterov, 0, True)


def _rates(cfg: OptimConfig, epochs: int, steps: int) -> list[float]:
    opt = build_sgd(_params(), cfg)
    schedule = build_schedule(opt, cfg, epochs)
    rates = []
    for _ in range(steps):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    return rates


def test_cosine_schedule_reaches_lr_min_after_the_last_epoch() -> None:
    cfg = OptimConfig(lr=0.1, lr_min=0.01)
    expected = [0.01 + 0.09 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(5)]
    assert _rates(cfg, 4, 5) == pytest.approx(expected)
    assert expected[-1] == pytest.approx(0.01)
    assert _rates(cfg, 0, 2) == pytest.approx([0.1, 0.01])  # no epochs: a schedule of one


def test_exponential_schedule_multiplies_by_lr_gamma_per_epoch() -> None:
    cfg = OptimConfig(lr=0.1, schedule="exponential", lr_gamma=0.5, lr_min=0.07)  # lr_min plays no part
    assert _rates(cfg, 4, 4) == pytest.approx([0.1, 0.05, 0.025, 0.0125])


@pytest.mark.parametrize(
    ("max_norm", "scale"),
    [(1.0, 1.0), (100.0, 1.0), (1e-4, 1e-4)],  # clipped; under the bound (unchanged); a norm where 1e-6 counts
)
def test_clipping_equals_torchs_clip_grad_norm(max_norm: float, scale: float) -> None:
    ours, reference = _params(scale), _params(scale)
    clip_gradients(ours, max_norm)
    norm = float(nn.utils.clip_grad_norm_(reference, max_norm))
    for a, b in zip(ours, reference, strict=True):
        assert a.grad is not None and b.grad is not None
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=0.0)
    clipped = math.sqrt(sum(float(p.grad.square().sum()) for p in ours if p.grad is not None))
    assert clipped == pytest.approx(norm * min(1.0, max_norm / (norm + 1e-6)), rel=1e-5)


def test_clipping_under_the_bound_leaves_cpu_gradients_untouched(monkeypatch: pytest.MonkeyPatch) -> None:
    """A factor of one is not multiplied in on the CPU (the same values: ``x * 1.0`` is ``x``); a factor under one
    is."""
    calls: list[float] = []
    real = torch._foreach_mul_

    def counted(tensors: list[torch.Tensor], factor: torch.Tensor) -> None:
        calls.append(float(factor))
        real(tensors, factor)

    monkeypatch.setattr(torch, "_foreach_mul_", counted)
    grads = [torch.tensor([3.0, 4.0])]
    clip_gradient_tensors(grads, 5.0 + 1e-5)  # the norm 5 is under the bound: a factor of one
    assert calls == [] and torch.equal(grads[0], torch.tensor([3.0, 4.0]))
    clip_gradient_tensors(grads, 2.5)
    assert calls == [pytest.approx(0.5)]
    torch.testing.assert_close(grads[0], torch.tensor([1.5, 2.0]))


def test_clip_zero_is_off() -> None:
    params = _params(50.0)
    grads = [p.grad for p in params if p.grad is not None]
    before = [g.clone() for g in grads]
    clip_gradients(params, 0.0)
    clip_gradient_tensors(grads, 0.0)
    assert len(grads) == 2 and all(torch.equal(g, b) for g, b in zip(grads, before, strict=True))


def test_flat_sgd_zero_grad_frees_gradients_by_default() -> None:
    """As torch.optim.SGD's: ``zero_grad()`` frees the gradients, and FlatSGD then updates per parameter."""
    params = _params()
    opt = FlatSGD(params, lr=0.1, momentum=0.9, foreach=True)
    for _ in range(2):
        opt.zero_grad(set_to_none=False)
        torch.stack([p.square().sum() for p in params]).sum().backward()
        opt.step()
    assert opt.flat_gradient() is not None
    opt.zero_grad()
    assert all(p.grad is None for p in params) and opt.flat_gradient() is None
