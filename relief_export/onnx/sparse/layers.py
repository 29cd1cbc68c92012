"""The layer ops sparse compute rewrites, one entry each in ``LAYER_KINDS``: how to read the
connection mask from the weight, cut a block's weight, and write a block as the same op.

Conv (group 1, any kernel): W [O, I, *kernel], a connection is a nonzero kernel slice
W[o, i]. Gemm (transA 0, transB 1, alpha = beta = 1): W [O, I]. Both read channels on axis 1
and write units on axis 1. MatMul with a constant 2-d W [I, O] (a Linear on [..., I], its bias
a separate Add) reads and writes the last axis; its weight is handled as W^T [O, I]. A block
is the same op on the block's input channels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_ir as ir


@dataclass(frozen=True)
class LayerKind:
    """``eligible(node)`` says the node is this kind in the form we rewrite; ``attributes``
    are copied to every block; ``channel_axis``: the axis of the input it reads and of the
    output it writes (1, or -1 for the last); ``input_axis``: the stored weight's axis of
    input channels (its units-first form [O, I, ...] swaps it with 0 when it is 0);
    ``bias_input``: the bias is the op's third input, else an Add of it follows the op."""

    eligible: Callable[[ir.Node], bool]
    attributes: Callable[[ir.Node], dict[str, Any]]
    channel_axis: int = 1
    input_axis: int = 1
    bias_input: bool = True  # the bias is the op's third input (else an Add after it)

    def units_first(self, stored: np.ndarray) -> np.ndarray:
        """The stored weight as [O, I, *kernel] (the stored one as [I, O] transposed)."""
        return stored.T if self.input_axis == 0 else stored

    def stored(self, units_first: np.ndarray) -> np.ndarray:
        return units_first.T if self.input_axis == 0 else units_first

    def reads_axis(self, axis: int, rank: int) -> bool:
        """Whether this kind reads channels on ``axis`` of an input of ``rank`` axes."""
        return rank >= 2 and self.channel_axis % rank == axis % rank


def _attribute(node: ir.Node, name: str, default: Any) -> Any:
    attribute = node.attributes.get(name)
    return default if attribute is None else attribute.value


def _conv_eligible(node: ir.Node) -> bool:
    return _attribute(node, "group", 1) == 1 and \
        _attribute(node, "auto_pad", "NOTSET") in ("NOTSET", "VALID")


def _gemm_eligible(node: ir.Node) -> bool:
    return (_attribute(node, "transA", 0), _attribute(node, "transB", 0)) == (0, 1) and \
        _attribute(node, "alpha", 1.0) == 1.0 and _attribute(node, "beta", 1.0) == 1.0


def _matmul_eligible(node: ir.Node) -> bool:
    weight = constant(node.inputs[1]) if len(node.inputs) == 2 else None
    source = node.inputs[0]
    return weight is not None and weight.ndim == 2 and source is not None and \
        source.shape is not None and len(source.shape) >= 2


def _copied(node: ir.Node) -> dict[str, Any]:
    return {name: attribute.value for name, attribute in node.attributes.items()}


LAYER_KINDS: dict[str, LayerKind] = {
    "Conv": LayerKind(_conv_eligible, _copied),
    "Gemm": LayerKind(_gemm_eligible, _copied),
    "MatMul": LayerKind(_matmul_eligible, _copied, channel_axis=-1, input_axis=0,
                        bias_input=False),
}


def connection_mask(weight: np.ndarray) -> np.ndarray:
    """[O, I] True where unit o reads channel i (any nonzero tap)."""
    return np.asarray(weight.reshape(weight.shape[0], weight.shape[1], -1).any(-1))


def constant(value: ir.Value | None) -> np.ndarray | None:
    """The array of an initializer or constant value, else None."""
    if value is None or value.const_value is None:
        return None
    return value.const_value.numpy()


def absorbable_weight(node: ir.Node, value: ir.Value, axis: int) -> ir.Value | None:
    """The weight of ``node`` if it is a layer of ``LAYER_KINDS`` reading ``value`` as its
    input, channels on ``axis``, with a constant weight only it reads (so its input axis can
    be permuted)."""
    kind = LAYER_KINDS.get(node.op_type)
    rank = len(value.shape) if value.shape is not None else 0
    if kind is None or not kind.eligible(node) or not kind.reads_axis(axis, rank) or \
            node.inputs[0] is not value or len(node.inputs) < 2:
        return None
    weight = node.inputs[1]
    if weight is None or constant(weight) is None or len(weight.uses()) != 1 or \
            weight.is_graph_input():
        return None
    return weight


def known_sizes(shape: ir.Shape | None, start: int) -> list[int] | None:
    """The sizes of ``shape`` from axis ``start`` on, when every one is a known integer."""
    if shape is None or len(shape) < start:
        return None
    dims = list(shape)[start:]
    sizes = [d for d in dims if isinstance(d, int)]
    return sizes if len(sizes) == len(dims) else None
