"""``compact(model, example_inputs)``: remove dead units exactly; the masked model is the oracle."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch import fx, nn

from .. import validate
from ..channels import PARTIAL_ADD_COST, SlotGraph, build
from ..errors import ReliefError, VerificationError
from ..graph.passes import Pass, PassResult, run
from ..inputs.capture import CAPTURED_BY, capture
from ..runtime.seeded import random_like
from ..table import format_table
from . import graph as g
from .decide import Decision, decide
from .fold import fold_batchnorms
from .report import UNCOMPACTED, CompactionReport
from .rewrite import rewrite

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
    examples = validate.examples(example_inputs)
    validate.flag("fold_batchnorm", fold_batchnorm)
    validate.integer("align", align, 1, 1024)
    validate.number("partial_add_cost", partial_add_cost, 0.0, float("1e30"))
    validate.integer("check_samples", check_samples, 1, 4096)
    _check_finite(model)
    state = Compaction(model, examples, align, partial_add_cost, fold_batchnorm, check_samples)
    state = run(PASSES, state).state
    assert state.graph_module is not None
    return state.graph_module, state.report


@dataclass
class Compaction:
    """What the compaction passes share: the masked model (the oracle), its example inputs,
    the options, and what the passes build: graph, slots, decision, report."""

    model: nn.Module
    examples: tuple[torch.Tensor, ...]
    align: int
    partial_add_cost: float
    fold_batchnorm: bool
    check_samples: int
    graph_module: fx.GraphModule | None = None
    slots: SlotGraph | None = None
    decision: Decision | None = None
    report: CompactionReport = field(default_factory=CompactionReport)


def _build(state: Compaction) -> PassResult[Compaction]:
    """Capture an unmasked copy, propagate shapes, run the channel interpreter."""
    graph_module = capture(g.unmasked_copy(state.model), state.examples, "compaction")
    _check_arity(graph_module, len(state.examples))
    g.propagate_shapes(graph_module, *state.examples)
    state.graph_module = graph_module
    state.slots = build(graph_module, state.partial_add_cost)
    state.report.captured = graph_module.meta.get(CAPTURED_BY, "torch.fx")
    left_whole = list(dict.fromkeys(state.slots.unsupported))
    state.report.left_whole = [asdict(entry) for entry in left_whole]
    reasons = tuple(f"{UNCOMPACTED} unsupported {entry}" for entry in left_whole)
    state.report.notes += [*reasons, *state.slots.notes]
    return PassResult(state, True, reasons)


def _decide(state: Compaction) -> PassResult[Compaction]:
    assert state.slots is not None
    state.decision = decide(state.slots, state.align)
    return PassResult(state, False)


def _rewrite(state: Compaction) -> PassResult[Compaction]:
    assert state.slots is not None and state.decision is not None
    changes, dropped = rewrite(state.slots, state.decision)
    state.report.layers, state.report.input_features_dropped = changes, dropped
    return PassResult(state, state.report.changed)


def _fold(state: Compaction) -> PassResult[Compaction]:
    assert state.graph_module is not None
    if not state.fold_batchnorm:
        return PassResult(state, False)
    state.report.batchnorm_folded = fold_batchnorms(state.graph_module)
    return PassResult(state, bool(state.report.batchnorm_folded))


def _verify(state: Compaction) -> PassResult[Compaction]:
    assert state.graph_module is not None
    g.set_mode(state.graph_module, training=False)
    state.report.max_relative_error = verify(state.model, state.graph_module, state.examples,
                                             state.check_samples)
    return PassResult(state, False)


def _built(state: Compaction) -> bool:
    return state.graph_module is not None and state.slots is not None


def _decided(state: Compaction) -> bool:
    return _built(state) and state.decision is not None


# build -> decide (the decide / align fixed point) -> rewrite -> fold BatchNorm -> verify
PASSES = [Pass("build", _build, ensures=_built),
          Pass("decide", _decide, requires=_built, ensures=_decided),
          Pass("rewrite", _rewrite, requires=_decided),
          Pass("fold BatchNorm", _fold, requires=_built),
          Pass("verify", _verify, requires=_built)]


def verify(original: nn.Module, compacted: nn.Module, examples: Any, samples: int = 8,
           seed: int = 0) -> float:
    """max |a - b| / max |a| per output, on the examples and on seeded random inputs of their
    shapes (float inputs: normal and uniform; integer inputs such as token ids: uniform over
    the examples' range). Above 1e-5, or outputs of another structure: VerificationError
    (exit code 1) with a table per input batch and output."""
    examples = validate.examples(examples)
    generator = torch.Generator().manual_seed(seed)
    draws = {"the examples": examples,
             **{f"{samples} {label} samples (seed {seed})":
                tuple(random_like(x, samples, generator, kind) for x in examples)
                for kind, label in (("normal", "N(0,1)"), ("uniform", "U(0,1)"))}}
    rows: list[list[Any]] = []
    was_training = original.training
    g.set_mode(original, training=False)
    try:
        with torch.no_grad():
            for label, inputs in draws.items():
                rows += [[label, *row] for row in _compare(original(*inputs),
                                                           compacted(*inputs))]
    finally:
        g.set_mode(original, training=was_training)
    worst = max(row[-1] for row in rows)
    if not worst <= TOLERANCE:
        table = format_table(["inputs", "output", "max |error|", "max |output|", "relative"],
                             rows)
        raise VerificationError(f"compaction changed the function (max relative error "
                                f"{worst:.2e} > {TOLERANCE:.0e}); please report this model\n"
                                f"{table}")
    return worst


def _compare(expected: Any, got: Any) -> list[list[Any]]:
    """[output, max |error|, max |expected|, relative] per output leaf (pytree order)."""
    expected_leaves, got_leaves = pytree.tree_leaves(expected), pytree.tree_leaves(got)
    if len(expected_leaves) != len(got_leaves):
        return [["structure", f"{len(got_leaves)} outputs", f"{len(expected_leaves)} outputs",
                 float("inf")]]
    rows: list[list[Any]] = []
    for index, (a, b) in enumerate(zip(expected_leaves, got_leaves, strict=True)):
        name = f"output {index}"
        if not isinstance(a, torch.Tensor) or not a.is_floating_point():
            same = torch.equal(torch.as_tensor(a), torch.as_tensor(b))
            rows.append([name, "equal" if same else "differs", "", 0.0 if same else float("inf")])
        elif a.shape != b.shape:
            rows.append([name, f"shape {list(b.shape)}", f"shape {list(a.shape)}", float("inf")])
        else:
            error = float((a - b).abs().max()) if a.numel() else 0.0
            scale = float(a.abs().max()) if a.numel() else 0.0
            rows.append([name, error, scale, error / max(scale, 1e-12) if error else 0.0])
    return rows


def _check_arity(graph_module: fx.GraphModule, given: int) -> None:
    inputs = [node for node in graph_module.graph.nodes if node.op == "placeholder"]
    required = [node for node in inputs if not node.args]
    if not len(required) <= given <= len(inputs):
        names = ", ".join(str(node.target) for node in inputs)
        raise ReliefError(f"the model takes {len(required)} to {len(inputs)} inputs ({names}) "
                          f"but example_inputs holds {given} tensor(s)" if len(required) !=
                          len(inputs) else f"the model takes {len(inputs)} input(s) ({names}) "
                          f"but example_inputs holds {given} tensor(s)")


def _check_finite(model: nn.Module) -> None:
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ReliefError(f"NaN or infinite values in {name!r}; cannot compact")
