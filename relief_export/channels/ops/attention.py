"""Attention over channels split into heads: one group per head across queries, keys and
values, whether through ``scaled_dot_product_attention`` or written out as
``softmax(q @ k^T / s) @ v`` (the matmul and softmax rules)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import fx

from ...graph import ops
from .. import layer_call as lc
from ..structures import Slots
from ..table import rule

if TYPE_CHECKING:
    from ..builder import Builder


@rule(functions=ops.ATTENTION_FUNCTIONS, heads=True)
def attention(b: Builder, node: fx.Node) -> Slots | None:
    """scaled_dot_product_attention(q, k, v): output channel (h, d) is v's channel (h, d)
    mixed over tokens by softmax weights that sum to 1, so a constant stays the same
    constant. A head's queries, keys and values go or stay together (one group per head);
    queries and keys count as read."""
    q, k, v = (b.of(lc.arg(node, i, name)) for i, name in enumerate(("query", "key",
                                                                     "value")))
    if q is None or k is None or v is None or lc.arg(node, 4, "dropout_p", 0.0) or \
            lc.arg(node, 7, "enable_gqa", False):
        return None
    layouts = {(x.axis, x.inner_axis, x.head_size, x.width) for x in (q, k, v)}
    if len(layouts) != 1 or q.inner_axis is None:
        return None
    for head in range(v.heads):
        ids = [x.ids[c] for x in (q, k, v)
               for c in range(head * v.head_size, (head + 1) * v.head_size)]
        for other in ids[1:]:
            b.s.union.union(ids[0], other)
    everything = torch.ones(q.width, dtype=torch.bool)
    b.s.read_channels(q, everything)
    b.s.read_channels(k, everything)
    return v


@rule(functions=ops.MATMUL_FUNCTIONS, methods=("matmul",), heads=True)
def matmul(b: Builder, node: fx.Node) -> Slots | None:
    """Hand-written attention, [batch, heads, tokens, features]:
    - scores = q @ k^T (both split into heads, k's features on the row axis): one new slot
      per head, in that head's group; queries and keys count as read.
    - context = p @ v (p one slot per head, v split into heads): v's channels, each head's
      slot of p in v's head group. When p = softmax(., -1) its rows sum to 1, so a constant
      channel of v stays that constant; otherwise only zero channels stay known (0 @ x = 0).
    Any other product of two values is outside the rule."""
    left, right = lc.arg(node, 0, "input"), lc.arg(node, 1, "other")
    a, c, shape = b.of(left), b.of(right), lc.shape_of(node)
    if a is None or c is None or shape is None or a.axis != c.axis or \
            a.axis >= len(shape) - 2:
        return None
    rank = len(shape)
    if a.inner_axis == rank - 1 and c.inner_axis == rank - 2 and \
            (a.width, a.head_size) == (c.width, c.head_size):
        scores = b.fresh(a.heads, axis=a.axis)
        for head in range(a.heads):
            for x in (a, c):
                for channel in range(head * a.head_size, (head + 1) * a.head_size):
                    b.s.union.union(scores.ids[head], x.ids[channel])
        everything = torch.ones(a.width, dtype=torch.bool)
        b.s.read_channels(a, everything)
        b.s.read_channels(c, everything)
        return scores
    if a.inner_axis is None and c.inner_axis == rank - 1 and a.width == c.heads:
        for head in range(c.heads):
            for channel in range(head * c.head_size, (head + 1) * c.head_size):
                b.s.union.union(a.ids[head], c.ids[channel])
        if _rows_sum_to_one(left, rank):
            return c
        return c.with_state(c.matters, torch.zeros_like(c.value))
    return None


def _rows_sum_to_one(argument: object, rank: int) -> bool:
    """``argument`` is softmax over its last axis."""
    if not isinstance(argument, fx.Node) or not (
            argument.target in ops.SOFTMAX_FUNCTIONS or
            (argument.op == "call_method" and argument.target == "softmax")):
        return False
    dim = lc.arg(argument, 1, "dim")
    return isinstance(dim, int) and dim % rank == rank - 1


@rule(functions=ops.SOFTMAX_FUNCTIONS, methods=("softmax",))
def softmax(b: Builder, node: fx.Node) -> Slots | None:
    """softmax over an axis other than the channels keeps channels apart; a constant channel
    becomes 1 / n (n the size of that axis), so every channel is taken as live."""
    source, shape, dim = b.of(lc.arg(node, 0, "input")), lc.shape_of(node), lc.arg(node, 1, "dim")
    if source is None or shape is None or not isinstance(dim, int) or \
            dim % len(shape) == source.axis:
        return None
    return source.with_state(torch.ones_like(source.live), torch.zeros_like(source.value))
