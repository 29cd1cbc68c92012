"""The layer ops sparse compute rewrites, one entry each in ``LAYER_KINDS``: how to read the
connection mask from the weight, cut a block's weight, and write a block as the same op.

Conv (group 1, any kernel): W [O, I, *kernel], a connection is a nonzero kernel slice
W[o, i]. Gemm (transA 0, transB 1, alpha = beta = 1): W [O, I]. Both read channels on axis 1
and write units on axis 1, so a block is the same op on the block's input channels.
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
    are copied to every block."""

    eligible: Callable[[ir.Node], bool]
    attributes: Callable[[ir.Node], dict[str, Any]]


def _attribute(node: ir.Node, name: str, default: Any) -> Any:
    attribute = node.attributes.get(name)
    return default if attribute is None else attribute.value


def _conv_eligible(node: ir.Node) -> bool:
    return _attribute(node, "group", 1) == 1 and \
        _attribute(node, "auto_pad", "NOTSET") in ("NOTSET", "VALID")


def _gemm_eligible(node: ir.Node) -> bool:
    return (_attribute(node, "transA", 0), _attribute(node, "transB", 0)) == (0, 1) and \
        _attribute(node, "alpha", 1.0) == 1.0 and _attribute(node, "beta", 1.0) == 1.0


def _copied(node: ir.Node) -> dict[str, Any]:
    return {name: attribute.value for name, attribute in node.attributes.items()}


LAYER_KINDS: dict[str, LayerKind] = {
    "Conv": LayerKind(_conv_eligible, _copied),
    "Gemm": LayerKind(_gemm_eligible, _copied),
}


def connection_mask(weight: np.ndarray) -> np.ndarray:
    """[O, I] True where unit o reads channel i (any nonzero tap)."""
    return np.asarray(weight.reshape(weight.shape[0], weight.shape[1], -1).any(-1))


def constant(value: ir.Value | None) -> np.ndarray | None:
    """The array of an initializer or constant value, else None."""
    if value is None or value.const_value is None:
        return None
    return value.const_value.numpy()


def absorbable_weight(node: ir.Node, value: ir.Value) -> ir.Value | None:
    """The weight of ``node`` if it is a layer of ``LAYER_KINDS`` reading ``value`` as its
    input, with a constant weight only it reads (so its input axis can be permuted)."""
    if node.op_type not in LAYER_KINDS or not LAYER_KINDS[node.op_type].eligible(node) or \
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
