"""The channel table: which rule reads each operation.

Keys are functions (``torch.*``, ``F.*``, ATen overloads), Tensor method names and module
types; each family module in ``channels/ops`` registers its rules with ``@rule(...)``. An
operation not in the table is never guessed: the builder keeps its neighbourhood whole and
names the operation as the reason. A key is taught once: registering it twice is an error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import fx, nn

if TYPE_CHECKING:
    from .builder import Builder
    from .structures import Slots

Apply = Callable[["Builder", fx.Node], "Slots | None"]


@dataclass(frozen=True)
class OpRule:
    """``apply(builder, node)`` returns the node's slots, or None where its arguments fall
    outside what the rule models; ``heads`` says it understands channels split into attention
    heads (other rules see such inputs kept whole)."""

    name: str
    apply: Apply
    heads: bool


FUNCTIONS: dict[Any, OpRule] = {}
METHODS: dict[str, OpRule] = {}
MODULES: dict[type[nn.Module], OpRule] = {}


def rule(*, functions: Iterable[Any] = (), methods: Iterable[str] = (),
         modules: Iterable[type[nn.Module]] = (), heads: bool = False
         ) -> Callable[[Apply], Apply]:
    """Register the decorated function as the rule of these operations."""

    def register(apply: Apply) -> Apply:
        entry = OpRule(apply.__name__, apply, heads)
        _enter(FUNCTIONS, functions, entry)
        _enter(METHODS, methods, entry)
        _enter(MODULES, modules, entry)
        return apply

    return register


def _enter(table: dict[Any, OpRule], keys: Iterable[Any], entry: OpRule) -> None:
    for key in keys:
        if key in table:
            raise ValueError(f"{key} has two channel rules: {table[key].name} and {entry.name}")
        table[key] = entry


def lookup(node: fx.Node, modules: dict[str, nn.Module]) -> OpRule | None:
    """The rule of a call node: by function, method name, or the nearest registered class of
    the called module."""
    if node.op == "call_module":
        kind = type(modules[str(node.target)])
        return next((MODULES[c] for c in kind.__mro__ if c in MODULES), None)
    if node.op == "call_function":
        return FUNCTIONS.get(node.target)
    if node.op == "call_method":
        return METHODS.get(str(node.target))
    return None
