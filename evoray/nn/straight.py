"""A node of a single-path cell in one autograd function: ``sum_e (w_e * y_e + c_e)`` where every ``w_e`` is one and
every ``c_e`` zero in value (GDAS' straight-through weights, or a given cell's weights of one).

Written out, each edge costs a multiply and an add over the whole feature map, and their backward two more passes
and a reduction; here the forward is the plain sum of the ops' outputs and the backward gives every ``y_e`` the
node's gradient ``g`` unchanged, ``w_e`` the dot product ``<g, y_e>`` and every ``c_e`` the same ``sum(g)``. The
only difference from the written-out form is the rounding of ``w_e`` to one and ``c_e`` to zero (``1 - p + p`` is
one to within an ulp), which ``tests/test_speed_levers.py`` bounds.
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


class _NodeSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, n: int, zero: Tensor | None, *args: Tensor | None) -> Tensor:  # type: ignore[override]
        ys, cs = args[:n], args[2 * n :]  # the weights args[n : 2n] only take gradients
        ctx.n, ctx.with_c = n, bool(cs)
        ctx.save_for_backward(*ys)
        present = [y for y in ys if y is not None]
        if not present:
            assert zero is not None, "a node whose edges all output zeros needs their shape"
            return zero.clone()
        if len(present) == 1:  # returned as it is: autograd makes the output a view of it, no copy
            return present[0]
        out = present[0] + present[1]
        for y in present[2:]:
            out += y
        return out

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        n, ys = ctx.n, ctx.saved_tensors
        need = ctx.needs_input_grad[2:]
        grad_y = [g if y is not None and need[e] else None for e, y in enumerate(ys)]
        grad_w = [dot(g, y) if y is not None and need[n + e] else None for e, y in enumerate(ys)]
        grad_c: list[Tensor | None] = []
        if ctx.with_c:
            total = g.sum() if any(need[2 * n :]) else None
            grad_c = [total if need[2 * n + e] else None for e in range(n)]
        return (None, None, *grad_y, *grad_w, *grad_c)


def node_sum(ys: list[Tensor | None], ws: list[Tensor], cs: list[Tensor] | None, zero: Tensor | None) -> Tensor:
    """``sum_e (ws[e] * ys[e] + cs[e])`` for weights of one and zero in value; ``ys[e]`` None: edge ``e`` output zeros
    (the ``none`` op, or no op), and ``zero`` is such a tensor, needed only when every edge is None."""
    return _NodeSum.apply(len(ys), zero, *ys, *ws, *(cs or []))  # type: ignore[no-any-return]
