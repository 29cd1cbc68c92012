"""How a model's layers connect, discovered by tracing (torch.fx), never by names or order.

For NNrelief we need, per Linear / Conv1d / Conv2d: the BatchNorm that directly follows it, the node
whose output is its post-activation signal (for the dead-unit rule), and, per residual add,
what owns each side (a layer whose units can be pruned, or a per-channel gate buffer).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import fx, nn

from ..errors import ReliefError
from ..graph.attrs import attribute_node
from ..graph.ops import (
    ADD_FUNCTIONS,
    ELEMENTWISE_FUNCTIONS,
    ELEMENTWISE_METHODS,
    ELEMENTWISE_MODULES,
    IDENTITY_FUNCTIONS,
    IDENTITY_MODULES,
    MUL_FUNCTIONS,
)
from ..graph.trace import trace
from ..inputs.capture import capture

PURPOSE = "NNrelief"
TRANSPOSED_TYPES = (nn.ConvTranspose1d, nn.ConvTranspose2d)
LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, *TRANSPOSED_TYPES)
Layer = nn.Linear | nn.Conv1d | nn.Conv2d | nn.ConvTranspose1d | nn.ConvTranspose2d
BATCHNORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)


@dataclass(frozen=True)
class Side:
    """One input of a residual add: the layer (with its BN) or the gate that controls it."""

    node: fx.Node
    layer: str | None = None
    batchnorm: str | None = None
    gate: str | None = None


@dataclass
class Structure:
    """The traced graph and the facts NNrelief needs about it."""

    graph_module: fx.GraphModule
    layers: dict[str, Layer] = field(default_factory=dict)
    batchnorm_of: dict[str, str] = field(default_factory=dict)
    activation_of: dict[str, fx.Node] = field(default_factory=dict)
    residual_adds: list[tuple[fx.Node, Side, Side]] = field(default_factory=list)

    def watched(self) -> dict[fx.Node, int]:
        """Nodes whose statistics NNrelief's rules need (post-activation outputs, both sides of
        residual adds), with their channel axis: -1 where a Linear produces them (features
        come last; tokens count as positions), else 1."""
        def axis(layer: str | None) -> int:
            return -1 if layer is not None and isinstance(self.layers[layer], nn.Linear) else 1
        watch = {node: axis(layer) for layer, node in self.activation_of.items()}
        for _add, *sides in self.residual_adds:
            side_axis = min(axis(side.layer) for side in sides)
            watch.update({side.node: side_axis for side in sides})
        return watch


def discover(model: nn.Module, example: torch.Tensor | None = None) -> Structure:
    """Capture ``model`` and find its layers, their BatchNorms, activations and residual adds.

    torch.fx first; where it cannot trace and an ``example`` input is given, torch.export, with
    the graph calling the model's own layers (see ``capture``). Only the model's own modules
    are pruned: a layer the exported graph could not map back to one stays as it is."""
    if example is None:
        graph_module = trace(model, PURPOSE)
    else:
        graph_module = capture(model, (example,), PURPOSE, share=True)
    own = {id(module) for module in model.modules()}
    modules = dict(graph_module.named_modules())
    structure = Structure(graph_module)
    for node in graph_module.graph.nodes:
        if node.op == "call_module" and prunable(modules[node.target]) and \
                id(modules[node.target]) in own:
            name = str(node.target)
            structure.layers[name] = modules[name]
            batchnorm = _sole_batchnorm_user(node, modules)
            if batchnorm is not None and id(modules[str(batchnorm.target)]) in own:
                structure.batchnorm_of[name] = str(batchnorm.target)
            activation = _activation_after(batchnorm or node, modules)
            if activation is not None:
                structure.activation_of[name] = activation
        elif is_add(node) and _tensor_args(node) == 2:
            left, right = (a for a in node.args[:2] if isinstance(a, fx.Node))
            sides = [_side(side, modules) for side in (left, right)]
            structure.residual_adds.append((node, *(
                side if side.layer is None or side.layer in structure.layers
                else Side(side.node) for side in sides)))
    if not structure.layers:
        raise ReliefError(f"{type(model).__name__} has no Linear, Conv1d or Conv2d layer to prune")
    return structure


def find_layers(model: nn.Module) -> dict[str, Layer]:
    """Every prunable layer by qualified module name."""
    return {n: m for n, m in model.named_modules() if prunable(m)}


def is_transposed(layer: nn.Module) -> bool:
    return isinstance(layer, TRANSPOSED_TYPES)


def unit_axis(layer: nn.Module) -> int:
    """The weight axis of the units: 0 ([out, in, ...]), 1 for a transposed convolution."""
    return 1 if is_transposed(layer) else 0


def prunable(layer: nn.Module) -> bool:
    """Layers NNrelief scores: Linear, Conv1d / Conv2d, one-group transposed convolutions."""
    return isinstance(layer, LAYER_TYPES) and not (is_transposed(layer) and layer.groups != 1)


def out_units(layer: Layer) -> int:
    """Output neurons of a Linear, filters of a convolution."""
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def is_add(node: fx.Node) -> bool:
    return (node.op == "call_function" and node.target in ADD_FUNCTIONS) or (
        node.op == "call_method" and node.target in ("add", "add_"))


def is_mul(node: fx.Node) -> bool:
    return (node.op == "call_function" and node.target in MUL_FUNCTIONS) or (
        node.op == "call_method" and node.target in ("mul", "mul_"))


def is_activation(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules[str(node.target)], ELEMENTWISE_MODULES)
    if node.op == "call_function":
        return node.target in ELEMENTWISE_FUNCTIONS
    return node.op == "call_method" and node.target in ELEMENTWISE_METHODS


def is_passthrough(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Per-channel operations that leave a unit's identity intact (dropout, identity)."""
    if node.op == "call_module":
        return isinstance(modules[str(node.target)], IDENTITY_MODULES)
    return node.op == "call_function" and node.target in IDENTITY_FUNCTIONS


def _tensor_args(node: fx.Node) -> int:
    return sum(isinstance(a, fx.Node) for a in node.args[:2])


def _sole_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _sole_batchnorm_user(node: fx.Node, modules: dict[str, nn.Module]) -> fx.Node | None:
    user = _sole_user(node)
    if user is not None and user.op == "call_module" and \
            isinstance(modules[str(user.target)], BATCHNORM_TYPES):
        return user
    return None


def _activation_after(node: fx.Node, modules: dict[str, nn.Module]) -> fx.Node | None:
    """The first activation reached through sole users that keep units separate."""
    current = _sole_user(node)
    while current is not None and is_passthrough(current, modules):
        current = _sole_user(current)
    if current is not None and is_activation(current, modules) and current.args[0] is not None:
        return current
    return None


def _side(node: fx.Node, modules: dict[str, nn.Module]) -> Side:
    """Walk back from an add input through BN / dropout to the layer or gate that owns it."""
    current, batchnorm = node, None
    while True:
        if current.op == "call_module":
            module = modules[str(current.target)]
            if isinstance(module, LAYER_TYPES):
                return Side(node, layer=str(current.target), batchnorm=batchnorm)
            if isinstance(module, BATCHNORM_TYPES) and batchnorm is None:
                batchnorm = str(current.target)
            elif not isinstance(module, IDENTITY_MODULES):
                return Side(node)
        elif is_mul(current):
            return Side(node, gate=_gate_name(current))
        else:
            return Side(node)
        previous = current.args[0]
        if not isinstance(previous, fx.Node) or len(previous.users) != 1:
            return Side(node)
        current = previous


def _gate_name(node: fx.Node) -> str | None:
    """The buffer of a ``x * gate.view(1, -1, 1, 1)`` node, if one operand is such a buffer."""
    for operand in node.args[:2]:
        attr = attribute_node(operand)
        if attr is not None:
            return str(attr.target)
    return None
