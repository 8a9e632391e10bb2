"""How a supernet turns architecture parameters into the mixing weights of its edges.

One function per searcher family, registered by name:

- ``softmax`` (DARTS): ``w = softmax(alpha)``; every op but ``none`` runs (``none`` outputs zeros, so skipping it
  changes neither the output nor any gradient).
- ``gumbel-soft`` (SNAS): ``w = softmax((alpha + G) / tau)`` with fresh Gumbel noise ``G`` per forward.
- ``gumbel-hard`` (GDAS): ``probs = softmax((log_softmax(alpha) + G) / tau)``, ``w = one_hot(argmax) - probs.detach()
  + probs`` (straight-through); only the sampled op ``k`` of each edge runs and the edge outputs ``w[k] * op_k(x)``,
  so every logit of the edge gets a gradient through ``probs[k]`` (none when ``k`` is ``none``), as in the original's
  DARTS-space cells. On NAS-Bench-201 the other ops also add their zero-valued weight, as the original's NB201 cells
  do.
- ``decoded`` (EvNAS): the alphas are decoded to the one-hot matrix of their derived genotype, and ``w =
  softmax(one_hot)``: e/(e+7) on a chosen op, 1/(e+7) on the others of a chosen edge, 1/8 on unchosen edges.
- ``expert`` (XNAS): ``w = softmax(alpha)`` over the experts not yet wiped out; wiped-out experts never run.

Besides the modes, single paths: :func:`path_weights` runs exactly the ops of a given cell with weight 1 (how a
supernet scores one architecture) and :func:`random_path` draws one op per edge uniformly (RSPS, SNAS' warm-up).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from evoray.errors import DivergedError
from evoray.nn.straight import PathGrads
from evoray.registry import Registry
from evoray.spaces.derive import decoding_strengths, default_method, derive_cell, one_hot_cell
from evoray.spaces.genotype import CellGenotype
from evoray.spaces.space import SearchSpace


@dataclass
class EdgeWeights:
    """The mixing weights of one cell type's edges, and which ops to compute."""

    weights: Tensor  # (E, K)
    active: list[list[int]] | None = None  # per edge, the op columns to run; None: every op but `none`
    zero_terms: bool = False  # add the weights of the ops not run as zero-valued terms (GDAS on NAS-Bench-201)
    # A single path whose weights are one in value (a hard sample, a given cell): each edge runs at most one op and
    # outputs it unscaled; the weights only carry gradients (their weight, and with ``zero_terms`` the zero-valued sum
    # of the others'), which the cells' nodes give them (``evoray.nn.straight``).
    single_path: bool = False

    def path_grads(self) -> PathGrads | None:
        """For one forward of a single path whose weights take gradients: where its nodes leave them."""
        if not (self.single_path and self.weights.requires_grad and torch.is_grad_enabled()):
            return None
        assert self.active is not None and all(len(ops) == 1 for ops in self.active)
        return PathGrads(self.weights, [ops[0] for ops in self.active], self.zero_terms)


@dataclass
class WeightingContext:
    """What a weighting mode may need beyond the alphas."""

    space: SearchSpace
    cell_type: str
    tau: float = 1.0
    wiped: Tensor | None = None  # (E, K) bool, XNAS experts removed for good


Weighting = Callable[[Tensor, WeightingContext], EdgeWeights]
WEIGHTINGS: Registry[Weighting] = Registry("weighting mode")


def gumbel_like(x: Tensor) -> Tensor:
    """Standard Gumbel noise of ``x``'s shape: ``-log(Exponential(1))``."""
    return -torch.empty_like(x).exponential_().log()


@WEIGHTINGS.register("softmax")
def softmax_weights(alpha: Tensor, ctx: WeightingContext) -> EdgeWeights:
    return EdgeWeights(F.softmax(alpha, dim=-1))


@WEIGHTINGS.register("gumbel-soft")
def gumbel_soft_weights(alpha: Tensor, ctx: WeightingContext) -> EdgeWeights:
    return EdgeWeights(F.softmax((alpha + gumbel_like(alpha)) / ctx.tau, dim=-1))


@WEIGHTINGS.register("gumbel-hard")
def gumbel_hard_weights(alpha: Tensor, ctx: WeightingContext) -> EdgeWeights:
    log_p = F.log_softmax(alpha, dim=-1)
    for _ in range(100):  # resample the rare draw whose probabilities overflow, as GDAS does
        probs = F.softmax((log_p + gumbel_like(alpha)) / ctx.tau, dim=-1)
        if torch.isfinite(probs).all():
            break
    else:
        raise DivergedError(f"hard Gumbel weights stay non-finite (tau {ctx.tau}); the alphas may have diverged")
    index = probs.argmax(dim=-1, keepdim=True)  # (E, 1)
    hard = torch.zeros_like(probs).scatter_(-1, index, 1.0)
    weights = hard - probs.detach() + probs
    active = [[int(i)] for i in index.flatten().tolist()]
    zero_terms = ctx.space.family.hard_sample_zero_terms
    return EdgeWeights(weights, active=active, zero_terms=zero_terms, single_path=True)


@WEIGHTINGS.register("decoded")
def decoded_weights(alpha: Tensor, ctx: WeightingContext) -> EdgeWeights:
    return EdgeWeights(F.softmax(decode_one_hot(alpha, ctx.space, ctx.cell_type), dim=-1))


def decode_one_hot(alpha: Tensor, space: SearchSpace, cell_type: str) -> Tensor:
    """The one-hot (E, K) matrix of the genotype derived from ``alpha`` (DARTS top-2, NB201 argmax)."""
    weights = decoding_strengths(alpha.detach().float().cpu().numpy())
    cell = derive_cell(space, cell_type, weights, default_method(space))
    return torch.from_numpy(one_hot_cell(space, cell_type, cell)).to(alpha.device, alpha.dtype)


@WEIGHTINGS.register("expert")
def expert_weights(alpha: Tensor, ctx: WeightingContext) -> EdgeWeights:
    if ctx.wiped is None or not bool(ctx.wiped.any()):
        return EdgeWeights(F.softmax(alpha, dim=-1))
    weights = F.softmax(alpha.masked_fill(ctx.wiped, float("-inf")), dim=-1)
    active = []
    for e, row in enumerate((~ctx.wiped).tolist()):
        names = ctx.space.edge_ops(ctx.cell_type, e)
        active.append([k for k, kept in enumerate(row) if kept and names[k] != "none"])
    return EdgeWeights(weights, active=active)


def path_weights(
    space: SearchSpace, cell_type: str, cell: CellGenotype, device: torch.device | str = "cpu"
) -> EdgeWeights:
    """The single path of ``cell``: weight 1 on each (edge, op) it uses, and only those ops run; an edge it does not
    use outputs zeros."""
    weights = torch.from_numpy(one_hot_cell(space, cell_type, cell)).to(device)  # (E, K)
    active = [[int(k) for k in torch.nonzero(row).flatten().tolist()] for row in weights]
    if any(len(ops) > 1 for ops in active):  # a family whose edges carry more than one op
        return EdgeWeights(weights, active=active)
    return EdgeWeights(weights, active=active, single_path=True)


def random_path(space: SearchSpace, cell_type: str, device: torch.device | str = "cpu") -> EdgeWeights:
    """One op per edge drawn uniformly from the edge's ops (torch's generator), with weight 1: a random single path."""
    index = [int(torch.randint(len(space.edge_ops(cell_type, e)), ())) for e in range(space.num_edges)]
    weights = torch.zeros(space.alpha_shape(cell_type), device=device)
    weights[range(len(index)), index] = 1.0
    return EdgeWeights(weights, active=[[k] for k in index], single_path=True)
