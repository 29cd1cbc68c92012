"""``compact(model, example_inputs)``: remove dead units exactly; the masked model is the oracle."""

from __future__ import annotations

from typing import Any

import torch
from torch import fx, nn

from .. import validate
from ..errors import ReliefError
from ..fx_trace import trace
from . import graph as g
from .decide import decide
from .fold import fold_batchnorms
from .report import UNCOMPACTED, CompactionReport
from .rewrite import rewrite
from .slots import PARTIAL_ADD_COST, build

TOLERANCE = 1e-5


def compact(model: nn.Module, example_inputs: Any, *, fold_batchnorm: bool = False,
            align: int = 1, partial_add_cost: float = PARTIAL_ADD_COST,
            check_samples: int = 8) -> fx.GraphModule:
    """A smaller model computing the same function; see ``compact_with_report``."""
    return compact_with_report(model, example_inputs, fold_batchnorm=fold_batchnorm,
                               align=align, partial_add_cost=partial_add_cost,
                               check_samples=check_samples)[0]


def compact_with_report(model: nn.Module, example_inputs: Any, *,
                        fold_batchnorm: bool = False, align: int = 1,
                        partial_add_cost: float = PARTIAL_ADD_COST, check_samples: int = 8
                        ) -> tuple[fx.GraphModule, CompactionReport]:
    """Compact ``model`` (sparsity as zeros or torch.nn.utils.prune masks) and report on it.

    ``align`` > 1 keeps a multiple of that many units per layer (see ``decide``). Where a
    residual branch has dead units but the stream is live, the branch keeps zero rows unless
    their MACs exceed ``partial_add_cost`` per element of the sum; then only its live units
    stay and an index_select places them (a "partial add"). The input model is not modified.
    The result is checked against it on the example inputs and on seeded random inputs of
    the same shape: max |error| / max |output| <= 1e-5.
    """
    validate.module("model", model, "load a file with relief_export.load_model first")
    example = _example(example_inputs)
    validate.flag("fold_batchnorm", fold_batchnorm)
    validate.integer("align", align, 1, 1024)
    validate.number("partial_add_cost", partial_add_cost, 0.0, float("1e30"))
    validate.integer("check_samples", check_samples, 1, 4096)
    _check_finite(model)
    reference = g.unmasked_copy(model)
    graph_module = trace(reference, "compaction")
    g.propagate_shapes(graph_module, example)
    slots = build(graph_module, partial_add_cost)
    decision = decide(slots, align)
    changes, dropped = rewrite(slots, decision)
    report = CompactionReport(changes, dropped)
    report.notes += [f"{UNCOMPACTED} unsupported {op}" for op in
                     dict.fromkeys(slots.unsupported)]
    report.notes += slots.notes
    if fold_batchnorm:
        report.batchnorm_folded = fold_batchnorms(graph_module)
    graph_module.eval()
    report.max_relative_error = verify(model, graph_module, example, check_samples)
    return graph_module, report


def verify(original: nn.Module, compacted: nn.Module, example: torch.Tensor,
           samples: int = 8, seed: int = 0) -> float:
    """max |a - b| / max |a| over the example and seeded random inputs; raises above 1e-5."""
    generator = torch.Generator().manual_seed(seed)
    shape = (samples, *example.shape[1:])
    inputs = [example, torch.randn(shape, generator=generator),
              torch.rand(shape, generator=generator)]
    worst = 0.0
    was_training = original.training
    original.eval()
    try:
        with torch.no_grad():
            for x in inputs:
                expected, got = original(x), compacted(x)
                scale = expected.abs().max().clamp_min(1e-12)
                worst = max(worst, float((expected - got).abs().max() / scale))
    finally:
        original.train(was_training)
    if not worst <= TOLERANCE:
        raise ReliefError(f"compaction changed the function (max relative error {worst:.2e} > "
                          f"{TOLERANCE:.0e}); please report this model")
    return worst


def _example(example_inputs: Any) -> torch.Tensor:
    if isinstance(example_inputs, (tuple, list)):
        if len(example_inputs) != 1:
            raise ReliefError("compaction supports models with exactly one input tensor")
        example_inputs = example_inputs[0]
    if not isinstance(example_inputs, torch.Tensor) or not example_inputs.is_floating_point():
        raise ReliefError("example_inputs must be one floating-point tensor")
    validate.finite("example_inputs", validate.tensor("example_inputs", example_inputs))
    if example_inputs.dim() < 1 or example_inputs.shape[0] < 1:
        raise ReliefError(f"example_inputs must have a batch axis of size >= 1, got shape "
                          f"{list(example_inputs.shape)}")
    return example_inputs.detach()


def _check_finite(model: nn.Module) -> None:
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ReliefError(f"NaN or infinite values in {name!r}; cannot compact")
