"""The nodes of a single-path cell, each in one autograd function: ``sum_e (w_e * y_e + c_e)`` where every ``w_e`` (the
weight of edge ``e``'s op) is one and every ``c_e`` (with ``zero_terms``: the sum of the edge's other weights) zero in
value: GDAS' straight-through weights, or a given cell's weights of one.

Written out, each edge costs a multiply and an add over the whole feature map, and their backward two more passes
and a reduction; here the forward is the plain sum of the ops' outputs and the backward gives every ``y_e`` the
node's gradient ``g`` unchanged, ``w_e`` the dot product ``<g, y_e>`` and ``c_e`` the sum ``sum(g)``, so that the
(E, K) weight matrix gets ``<g, y_e>`` at edge ``e``'s op and ``sum(g)`` at its other ops. The only difference from
the written-out form is the rounding of ``w_e`` to one and ``c_e`` to zero (``1 - p + p`` is one to within an ulp),
which ``tests/test_speed_levers.py`` bounds.

Every cell of a cell type reads the same weights, so a forward of the network has one :class:`PathGrads` per cell
type: its nodes' backward passes leave their dot products and sums there, and the weight matrix's gradient is
assembled from them in one step once they have all run (instead of a gradient per edge and node, each added to the
others by autograd one scalar at a time: about a hundred small ops a backward pass of a six-cell network).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def dot(a: Tensor, b: Tensor) -> Tensor:
    """``(a * b).sum()`` without the product's tensor, where both are dense in the same memory format (read as the
    flat vectors their memory holds: one view each)."""
    if a.dtype == b.dtype == torch.float32 and a.shape == b.shape:
        cl = torch.channels_last
        if (a.is_contiguous() and b.is_contiguous()) or (
            a.dim() == 4 and a.is_contiguous(memory_format=cl) and b.is_contiguous(memory_format=cl)
        ):
            n = a.numel()
            return torch.dot(a.as_strided((n,), (1,)), b.as_strided((n,), (1,)))
    return (a.float() * b.float()).sum()


class _Left:
    """The dot products and sums the nodes leave for the weights of one cell type, in one backward pass."""

    def __init__(self, columns: list[int], zero_terms: bool) -> None:
        self.columns = columns  # per edge, the column of its op
        self.zero_terms = zero_terms
        self.dots: list[tuple[int, Tensor]] = []  # (edge, <g, y_e>)
        self.sums: list[tuple[list[int], Tensor]] = []  # (a node's edges, sum(g))

    def gradient(self, like: Tensor) -> Tensor:
        """The (E, K) weights' gradient from what the nodes left, which it clears."""
        E, K = like.shape
        grad = torch.zeros(E * K, dtype=like.dtype, device=like.device)
        cells: list[int] = []
        values: list[Tensor] = []
        for e, d in self.dots:
            cells.append(e * K + self.columns[e])
            values.append(d)
        if self.zero_terms:
            for edges, total in self.sums:
                for e in edges:
                    cells.extend(e * K + k for k in range(K) if k != self.columns[e])
                    values.extend([total] * (K - 1))
        if values:
            index = torch.tensor(cells, device=like.device)
            grad.index_put_((index,), torch.stack(values).to(like.dtype), accumulate=True)
        self.dots.clear()
        self.sums.clear()
        return grad.view(E, K)


class PathGrads:
    """The straight-through weights of one cell type in one forward: ``token`` (a 0-d tensor computed from them) goes
    into every node, so that autograd runs the weights' backward (:class:`_Collect`, which assembles their gradient
    from what the nodes left) after every node's. ``columns``: per edge, the column of its op."""

    def __init__(self, weights: Tensor, columns: list[int], zero_terms: bool) -> None:
        self.left = _Left(columns, zero_terms)
        self.token: Tensor = _Collect.apply(weights, self.left)


class _Collect(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, weights: Tensor, left: _Left) -> Tensor:  # type: ignore[override]
        ctx.left, ctx.like = left, weights.detach()
        return weights.new_zeros(())

    @staticmethod
    def backward(ctx: Any, _: Tensor) -> tuple[Tensor | None, None]:  # type: ignore[override]
        return ctx.left.gradient(ctx.like), None


class _NodeSum(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, edges: list[int], left: _Left | None, zero: Tensor | None, token: Tensor | None, *ys: Tensor | None
    ) -> Tensor:
        ctx.edges, ctx.left = edges, left
        ctx.collect = None if token is None else token.grad_fn  # the weights' backward, to ask whether it will run
        ctx.save_for_backward(*ys)
        present = [y for y in ys if y is not None]
        if not present:
            assert zero is not None, "a node whose edges all output zeros needs their shape"
            return zero  # a tensor of zeros made for this node: autograd makes the output a view of it, no copy
        if len(present) == 1:  # returned as it is: autograd makes the output a view of it, no copy
            return present[0]
        out = present[0] + present[1]
        for y in present[2:]:
            out += y
        return out

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        ys, left = ctx.saved_tensors, ctx.left
        # a backward pass that does not reach the weights (a gradient of the inputs alone) leaves nothing
        if left is not None and ctx.collect is not None and torch._C._will_engine_execute_node(ctx.collect):
            left.dots.extend((e, dot(g, y)) for e, y in zip(ctx.edges, ys, strict=True) if y is not None)
            if left.zero_terms:
                left.sums.append((ctx.edges, g.sum()))
        need = ctx.needs_input_grad[4:]
        return (None, None, None, None, *(g if y is not None and need[i] else None for i, y in enumerate(ys)))


def node_sum(ys: list[Tensor | None], edges: list[int], grads: PathGrads | None, zero: Tensor | None) -> Tensor:
    """``sum_e (w_e * ys[e] + c_e)`` over a node's ``edges`` for weights of one and zero in value, the weights'
    gradients left in ``grads`` (None: the weights take none); ``ys[e]`` None: edge ``e`` outputs zeros (the ``none``
    op, or no op), and ``zero`` is such a tensor, needed only when every edge is None."""
    if grads is None:
        return _NodeSum.apply(edges, None, zero, None, *ys)  # type: ignore[no-any-return]
    return _NodeSum.apply(edges, grads.left, zero, grads.token, *ys)  # type: ignore[no-any-return]
