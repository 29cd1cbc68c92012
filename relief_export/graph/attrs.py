"""Model attributes seen from a torch.fx graph (shared by pruning and compaction)."""

from __future__ import annotations

from typing import Any

import torch
from torch import fx

VIEW_METHODS = ("view", "reshape", "unsqueeze", "to")


def attribute_node(argument: Any) -> fx.Node | None:
    """The get_attr node behind ``argument`` through view-like methods, else None."""
    current = argument
    while isinstance(current, fx.Node) and current.op == "call_method" and \
            current.target in VIEW_METHODS:
        current = current.args[0]
    return current if isinstance(current, fx.Node) and current.op == "get_attr" else None


def attribute_value(graph_module: fx.GraphModule, argument: Any) -> torch.Tensor | None:
    """The tensor (parameter or buffer) behind ``argument``, else None."""
    node = attribute_node(argument)
    if node is None:
        return None
    value: Any = graph_module
    for part in str(node.target).split("."):
        value = getattr(value, part)
    return value if isinstance(value, torch.Tensor) else None


def free_attribute_name(root: torch.nn.Module, name: str) -> str:
    """``name`` made a Python identifier and, if ``root`` has it already, numbered (``_1``,
    ...): where a new submodule or buffer can go."""
    base = "".join(c if c.isalnum() else "_" for c in name).strip("_") or "layer"
    base = base if not base[0].isdigit() else f"n_{base}"
    candidate, number = base, 1
    while hasattr(root, candidate):
        candidate, number = f"{base}_{number}", number + 1
    return candidate
