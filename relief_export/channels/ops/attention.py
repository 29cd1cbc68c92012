"""Attention over channels split into heads (``scaled_dot_product_attention``): one group per
head across queries, keys and values."""

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
