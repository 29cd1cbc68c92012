"""Streaming statistics of one forward pass over calibration data (eval mode, no grad).

Layer inputs are seen through forward pre-hooks, registered in a context manager that always
removes them; other graph values (post-activation outputs, residual-add inputs) through a
torch.fx interpreter. Every statistic is reduced the moment its tensor exists, so in-place
activations that later overwrite a tensor cannot change it, and memory does not grow with the
number of samples.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import ReliefError, first_line
from ..graph.trace import quiet_interpreter, root_cause
from .scores import (
    ConvGeometry,
    TransposedGeometry,
    as_maps,
    conv_bias_contributions,
    conv_slice_norms,
    linear_contributions,
    linear_input_sum,
    output_positions,
    transposed_output_positions,
    transposed_slice_norms,
)
from .structure import TRANSPOSED_TYPES, Layer

CONV_SCORES = ("paper", "reference")
DEFAULT_BATCH = 128


@dataclass
class LayerStats:
    """Sums over samples of what a layer's contributions need (divided by ``count`` at the end).

    Linear: sum_n |x_n| [in]. Conv, paper: sum_n || |K_ij| (*) |x_ni| ||_F [out, in/g];
    conv, reference: sum_n |x_n| [in, H, W].
    """

    name: str
    layer: Layer
    conv_score: str = "paper"
    count: int = 0
    total: torch.Tensor | None = None
    positions: int = 1  # output positions (the bias acts on each)
    input_positions: int = 0  # a transposed convolution's MACs: weights x input positions

    def update(self, x: torch.Tensor) -> None:
        _check_finite(x, f"the input of layer {self.name!r}")
        if isinstance(self.layer, nn.Linear):
            part = linear_input_sum(x)
            self.count += x.numel() // x.shape[-1]
        elif isinstance(self.layer, TRANSPOSED_TYPES):
            scatter, maps = TransposedGeometry.of(self.layer), as_maps(x)
            kernel = as_maps(self.layer.weight).shape[2:]
            self.positions = transposed_output_positions(maps.shape[2:], tuple(kernel), scatter)
            self.input_positions = maps[0, 0].numel()
            self.count += x.shape[0]
            part = maps.detach().abs().sum(0, dtype=torch.float64) \
                if self.conv_score == "reference" \
                else transposed_slice_norms(as_maps(self.layer.weight), maps, scatter)
        else:
            geometry = ConvGeometry.of(self.layer)
            maps = as_maps(x)
            self.positions = output_positions(maps.shape[2:], geometry)
            self.count += x.shape[0]
            part = maps.detach().abs().sum(0, dtype=torch.float64) \
                if self.conv_score == "reference" \
                else conv_slice_norms(as_maps(self.layer.weight), maps, geometry)
        self.total = part if self.total is None else self.total + part

    def contributions(self) -> torch.Tensor:
        """[out, contributors + 1] float64: c_ij of NNRELIEF.md, bias last."""
        if self.total is None or self.count == 0:
            raise ReliefError(f"layer {self.name!r} never ran on the calibration data")
        layer = self.layer
        if isinstance(layer, nn.Linear):
            return linear_contributions(layer.weight, layer.bias, self.total / self.count)
        if self.conv_score == "reference":
            mean_map = (self.total / self.count).float().unsqueeze(0)
            slices = transposed_slice_norms(as_maps(layer.weight), mean_map,
                                            TransposedGeometry.of(layer)) \
                if isinstance(layer, TRANSPOSED_TYPES) else \
                conv_slice_norms(as_maps(layer.weight), mean_map, ConvGeometry.of(layer))
        else:
            slices = self.total / self.count
        bias = conv_bias_contributions(layer.bias, layer.out_channels, self.positions)
        return torch.cat([slices, bias], dim=1)


@dataclass
class ValueStats:
    """Per graph value: max |v| per channel, and sum_n |v_n| (all other axes kept). ``axis``
    is the channel axis: 1 for convolutions, -1 for Linear features ([batch, tokens,
    features] included: the tokens count as positions)."""

    name: str
    axis: int = 1
    count: int = 0
    channel_max: torch.Tensor | None = None
    abs_sum: torch.Tensor | None = None

    def update(self, value: torch.Tensor) -> None:
        _check_finite(value, f"the output of {self.name!r}")
        magnitude = value.detach().abs()
        channels = magnitude.movedim(self.axis, 0)
        per_channel = channels.reshape(channels.shape[0], -1).amax(1)
        self.channel_max = per_channel if self.channel_max is None \
            else torch.maximum(self.channel_max, per_channel)
        part = magnitude.sum(0, dtype=torch.float64)
        self.abs_sum = part if self.abs_sum is None else self.abs_sum + part
        self.count += value.shape[0]

    def channel_norms(self) -> torch.Tensor:
        """|| mean_n |v_n,c| ||_F per channel c."""
        assert self.abs_sum is not None
        mean = (self.abs_sum / self.count).movedim(self.axis - 1 if self.axis > 0 else self.axis,
                                                   0)
        return mean.reshape(mean.shape[0], -1).norm(dim=1)


@dataclass
class Activity:
    """All statistics of one pass: per layer, and per watched graph node."""

    layers: dict[str, LayerStats]
    values: dict[fx.Node, ValueStats] = field(default_factory=dict)
    samples: int = 0


def iterate_inputs(inputs: torch.Tensor | Iterable[Any], batch_size: int = DEFAULT_BATCH
                   ) -> Iterator[torch.Tensor]:
    """Batches from a tensor (split along dim 0) or an iterable of tensors / (x, y) pairs."""
    if isinstance(inputs, torch.Tensor):
        yield from inputs.split(batch_size)
        return
    for item in inputs:
        batch = item[0] if isinstance(item, (tuple, list)) else item
        if not isinstance(batch, torch.Tensor):
            raise ReliefError(f"calibration batches must be tensors, got {type(batch).__name__}")
        yield batch


@contextlib.contextmanager
def layer_hooks(layers: Mapping[str, Layer], conv_score: str
                ) -> Iterator[dict[str, LayerStats]]:
    """Forward pre-hooks feeding one LayerStats per layer; removed however the block exits."""
    if conv_score not in CONV_SCORES:
        raise ReliefError(f"conv_score must be one of {CONV_SCORES}, got {conv_score!r}")
    stats = {name: LayerStats(name, layer, conv_score) for name, layer in layers.items()}
    handles = []
    try:
        for name, layer in layers.items():
            def hook(_module, args, record=stats[name]):
                record.update(args[0])
            handles.append(layer.register_forward_pre_hook(hook))
        yield stats
    finally:
        for handle in handles:
            handle.remove()


class _Recorder(ShapeProp):
    """Runs the traced graph, storing shapes (``tensor_meta``) and watched nodes' statistics."""

    def __init__(self, graph_module: fx.GraphModule, watch: dict[fx.Node, ValueStats]):
        super().__init__(graph_module)
        self.watch = watch

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        if n in self.watch and isinstance(result, torch.Tensor):
            self.watch[n].update(result)
        return result


def collect(model: nn.Module, layers: Mapping[str, Layer], inputs: Any, conv_score: str,
            graph_module: fx.GraphModule | None = None, watch: Mapping[fx.Node, int] | None = None
            ) -> Activity:
    """One pass over ``inputs`` in eval mode; the model's train/eval state is restored."""
    values = {node: ValueStats(str(node.target), axis) for node, axis in (watch or {}).items()}
    was_training = model.training
    model.eval()
    samples = 0
    try:
        with layer_hooks(layers, conv_score) as stats, torch.no_grad():
            for batch in iterate_inputs(inputs):
                if batch.shape[0] == 0:
                    continue
                _run(model, graph_module, values, batch)
                samples += batch.shape[0]
    finally:
        model.train(was_training)
    if samples == 0:
        raise ReliefError("no calibration samples: the calibration data is empty")
    return Activity(stats, values, samples)


def _run(model: nn.Module, graph_module: fx.GraphModule | None,
         values: dict[fx.Node, ValueStats], batch: torch.Tensor) -> None:
    _check_finite(batch, "the calibration inputs")
    try:
        with quiet_interpreter():
            output = _Recorder(graph_module, values).run(batch) if graph_module is not None \
                else model(batch)
    except ReliefError:
        raise
    except (RuntimeError, ValueError, IndexError) as error:
        message = first_line(root_cause(error))
        raise ReliefError(f"calibration inputs of shape {list(batch.shape)} do not fit "
                          f"{type(model).__name__}: {message}") from None
    if isinstance(output, torch.Tensor):
        _check_finite(output, "the model output")


def _check_finite(tensor: torch.Tensor, where: str) -> None:
    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
        raise ReliefError(f"NaN or infinite values in {where}; the model or data is broken")
