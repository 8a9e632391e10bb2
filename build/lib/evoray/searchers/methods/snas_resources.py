"""SNAS' resource model: the size, FLOPs and memory access cost (MAC) of every op of every edge of every cell, and the
resource penalty built from them (Xie et al., 2019, https://arxiv.org/abs/1812.09926, and its original code).

Per op, for ``C`` channels on an input of side ``h`` and an output of side ``y`` (``h`` or ``h // 2``):

- pools: size 0, FLOPs ``9 y^2 C``, MAC ``2 y^2 C`` (stride 1) or ``5 y^2 C`` (stride 2);
- skip_connect: MAC ``2 h^2 C`` (identity); at stride 2 the factorized reduction: size ``2 C (C // 2)``,
  FLOPs ``size y^2``, MAC ``2 y^2 (4 C + C // 2) + size``;
- sep_conv_k: size ``2 C k^2 + 2 C^2``, FLOPs ``size y^2``, MAC ``y^2 (7 C + C) + size`` (``10 C`` at stride 2);
- dil_conv_k: size ``C k^2 + C^2``, FLOPs ``size y^2``, MAC ``y^2 (3 C + C) + size`` (``6 C`` at stride 2);
- none: 0; noise: MAC ``2 h^2 C`` like the identity.

The penalty of one cell weights each op's resources by ``Z`` (``reparametrization``, the sample itself),
``softmax(log_alpha)`` (``discrete``) or ``Z`` again with the resources detached and multiplied by the Concrete
log-density of ``Z`` (``policy_gradient``), sums them per edge, and combines the three sums as
``0.43 (2 size + FLOPs / 4000 + MAC / 100)``, or in log form as the mean of their logs (sums below 1 count as 1).
Edges are summed; cells of one type are averaged; the reduction cells are weighted by ``ratio``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from evoray.errors import ConfigError
from evoray.spaces import SearchSpace

RESOURCES = ("size", "flops", "mac")
# The method's default penalty weights of the original code: (linear, log form).
DEFAULT_LAMBDA = {"reparametrization": (1e-5, 1e-2), "discrete": (1e-4, 1e-2), "policy_gradient": (1e-5, 1e-4)}


def op_cost(name: str, C: int, h: int, stride: int) -> tuple[float, float, float]:
    """(size, FLOPs, MAC) of op ``name`` on ``C`` channels of side ``h`` with ``stride``."""
    y = h if stride == 1 else h // 2
    if name == "none":
        return 0.0, 0.0, 0.0
    if name in ("max_pool_3x3", "avg_pool_3x3"):
        return 0.0, 9.0 * y * y * C, (2.0 if stride == 1 else 5.0) * y * y * C
    if name in ("skip_connect", "noise"):
        if stride == 1 or name == "noise":
            return 0.0, 0.0, 2.0 * h * h * C
        size = 2.0 * C * (C // 2)
        return size, size * y * y, 2.0 * y * y * (4 * C + C // 2) + size
    if name.startswith(("sep_conv_", "dil_conv_")):
        k = int(name.rsplit("_", 1)[1].split("x")[0])
        if name.startswith("sep"):
            size, per = 2.0 * C * k * k + 2.0 * C * C, (7 if stride == 1 else 10)
        else:
            size, per = 1.0 * C * k * k + C * C, (3 if stride == 1 else 6)
        return size, size * y * y, y * y * (per * C + C) + size
    raise ConfigError(f"the SNAS resource model has no cost for op {name!r}")


def cell_costs(space: SearchSpace, cell_type: str, C: int, h: int, reduction: bool) -> Tensor:
    """(E, K, 3) resources of every op of every edge of one cell whose inputs have side ``h`` (ops absent from an
    edge cost 0)."""
    costs = torch.zeros(*space.alpha_shape(cell_type), 3, dtype=torch.float64)
    for e, (_, source) in enumerate(space.edges):
        from_input = source < space.num_inputs
        stride = 2 if reduction and from_input else 1
        side = h if from_input or not reduction else h // 2  # a reduction cell's nodes are at half resolution
        for k, name in enumerate(space.edge_ops(cell_type, e)):
            costs[e, k] = torch.tensor(op_cost(name, C, side, stride), dtype=torch.float64)
    return costs


def concrete_log_density(log_alpha: Tensor, z: Tensor, tau: float, eps: float = 1e-4) -> Tensor:
    """Per row, the log-density of a Concrete (Gumbel-softmax) sample ``z`` with locations ``exp(log_alpha)`` and
    temperature ``tau``: ``log (n-1)! + (n-1) log tau + sum log_alpha - (tau+1) sum log z - n log sum alpha z^-tau``
    (``z`` and the last sum floored at ``eps`` as in SNAS' code)."""
    n = log_alpha.shape[-1]
    zc = z.clamp_min(eps)
    last = (zc.pow(-tau) * log_alpha.exp()).clamp_min(eps).sum(-1)
    return math.lgamma(n) + (n - 1) * math.log(tau) + log_alpha.sum(-1) - (tau + 1) * zc.log().sum(-1) - n * last.log()


def _combine(sums: Tensor, separation: str, log_form: bool) -> Tensor:
    """(..., 3) per-edge resource sums -> (...) per-edge penalty."""
    if log_form:
        clean = torch.where(sums.abs() < 1, torch.ones_like(sums), sums).abs().log()
        return clean.mean(-1) if separation == "all" else clean[..., RESOURCES.index(separation)]
    if separation == "all":
        return 0.43 * (2 * sums[..., 0] + sums[..., 1] / 4000 + sums[..., 2] / 100)
    return sums[..., RESOURCES.index(separation)]


def cell_type_penalty(
    costs: Tensor,
    log_alpha: Tensor,
    z: Tensor,
    method: str,
    tau: float,
    separation: str = "all",
    log_form: bool = False,
) -> Tensor:
    """The penalty of the cells of one type: ``costs`` (cells, E, K, 3), ``z`` the (E, K) sample of the forward."""
    costs = costs.to(z.dtype)
    if method == "discrete":
        w = F.softmax(log_alpha, dim=-1)
    elif method in ("reparametrization", "policy_gradient"):
        w = z
    else:
        raise ConfigError(f"unknown SNAS penalty {method!r}; valid: reparametrization, discrete, policy_gradient")
    per_edge = _combine((costs * w[None, :, :, None]).sum(-2), separation, log_form)  # (cells, E)
    if method == "policy_gradient":  # as in SNAS' code, z keeps its graph inside the log-density
        per_edge = per_edge.detach() * concrete_log_density(log_alpha, z, tau)[None, :]
    return per_edge.sum(-1).mean()
