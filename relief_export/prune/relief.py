"""NNrelief: ``relief_scores``, one pruning pass ``relief_step``, and the iterative ``relief``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import fx, nn
from torch.utils.data import Dataset, Subset

from .. import validate
from ..channels import read_units
from ..data.tensors import batches
from ..errors import ReliefError
from ..graph.passes import Pass, PassResult, fixed_point
from ..progress import progress as show_progress
from .activity import Activity, collect, iterate_inputs
from .blocks import check_blocks, in_group_masks
from .distributed import LOCAL, World, reduce_activity, tensor_digest
from .metrics import layer_densities, summary
from .select import MaskPlan, check_alpha, keep_mask
from .structure import Layer, Structure, discover, find_layers, out_units
from .train import FitConfig, FitControl, FitInterrupted, FitState, evaluate, fit


def relief_scores(model: nn.Module, inputs: Any, *, conv_score: str = "paper"
                  ) -> dict[str, torch.Tensor]:
    """Per Linear / Conv1d / Conv2d (by module name): contributions [out, contributors + 1],
    bias last."""
    validate.module("model", model, "load a file with relief_export.load_model first")
    layers = find_layers(model)
    if not layers:
        raise ReliefError(f"{type(model).__name__} has no Linear, Conv1d or Conv2d layer to score")
    activity = collect(model, layers, inputs, conv_score)
    return {name: stats.contributions().float() for name, stats in activity.layers.items()}


def relief_step(model: nn.Module, inputs: Any, *, alpha_fc: float = 0.95,
                alpha_conv: float = 0.9, conv_score: str = "paper", blocks: int = 1,
                world: World = LOCAL) -> dict[str, torch.Tensor]:
    """One NNrelief pass, applied in place; returns the boolean keep-masks by tensor name.

    Statistics come from one forward pass before any pruning of this pass. Then: the keep rule
    per unit, dead units, the residual rule, and backward pruning of unread units to a fixed
    point. Any error is raised before the model is touched. Under torchrun (``world``) each
    rank passes its shard of the calibration samples; the statistics are all-reduced before
    any decision and the masks checked identical on every rank. ``blocks`` > 1 keeps only
    connections inside each unit's group (``prune/blocks.py``).
    """
    validate.module("model", model, "load a file with relief_export.load_model first")
    check_alpha(alpha_fc, "alpha_fc")
    check_alpha(alpha_conv, "alpha_conv")
    check_blocks(blocks)
    _check_parameters(model)
    structure = discover(model, _example(inputs))
    activity = collect(model, structure.layers, inputs, conv_score, structure.graph_module,
                       structure.watched())
    reduce_activity(activity, world)
    gates = {side.gate for _, *sides in structure.residual_adds for side in sides if side.gate}
    plan = MaskPlan(model, structure.layers, structure.batchnorm_of, gates)
    scores = {name: activity.layers[name].contributions() for name in structure.layers}
    inside = in_group_masks(structure.graph_module, scores, blocks) if blocks > 1 else {}
    for name, layer in structure.layers.items():
        alpha = alpha_fc if isinstance(layer, nn.Linear) else alpha_conv
        score = scores[name] * inside[name] if name in inside else scores[name]
        plan.restrict_layer(name, keep_mask(score, alpha))
    _prune_dead_units(plan, structure, activity)
    _apply_residual_rule(plan, structure, activity, alpha_fc, alpha_conv)
    plan.apply()
    prune_unread(plan, structure.graph_module, structure.layers)
    masks = {name: mask.clone() for name, mask in plan.masks.items()}
    world.check_identical("NNrelief masks", tensor_digest(masks))
    return masks


def _example(inputs: Any) -> torch.Tensor | None:
    """Two calibration samples, for capturing a model torch.fx cannot trace (not taken from a
    one-shot iterator, whose first batch would be lost)."""
    if isinstance(inputs, Iterator):
        return None
    first = next(iterate_inputs(inputs), None)
    return None if first is None else first[:2]


def _check_parameters(model: nn.Module) -> None:
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ReliefError(f"NaN or infinite values in {name!r}; fix or retrain the model")


def _prune_dead_units(plan: MaskPlan, structure: Structure, activity: Activity) -> None:
    """A unit whose post-activation output is 0 on every sample and position loses everything."""
    for layer, node in structure.activation_of.items():
        peak = activity.values[node].channel_max
        if peak is None:
            continue
        for unit in torch.nonzero(peak == 0).flatten().tolist():
            plan.prune_unit(layer, unit)


def _apply_residual_rule(plan: MaskPlan, structure: Structure, activity: Activity,
                         alpha_fc: float, alpha_conv: float) -> None:
    """At out = a + b, per channel keep the sides whose share of ||a|| + ||b|| survives."""
    for _add, *sides in structure.residual_adds:
        sums = [activity.values[side.node].abs_sum for side in sides]
        if sums[0] is None or sums[1] is None or sums[0].shape != sums[1].shape:
            continue
        alpha = alpha_fc if activity.values[sides[0].node].axis == -1 else alpha_conv
        scores = torch.stack([activity.values[side.node].channel_norms() for side in sides], 1)
        kept = keep_mask(scores, alpha)
        for column, side in enumerate(sides):
            for channel in torch.nonzero(~kept[:, column]).flatten().tolist():
                if side.layer is not None:
                    plan.prune_unit(side.layer, channel)
                elif side.gate is not None:
                    plan.close_gate(side.gate, channel)


def prune_unread(plan: MaskPlan, graph_module: fx.GraphModule,
                 layers: Mapping[str, Layer]) -> int:
    """Backward pruning to a fixed point: units nobody reads lose their inputs, bias and BN.
    Returns the rounds that changed masks."""
    def prune_round(state: MaskPlan) -> PassResult[MaskPlan]:
        read = read_units(graph_module)
        changed = False
        for name, layer in layers.items():
            for unit in range(out_units(layer)):
                if (name, unit) not in read:
                    changed |= state.prune_unit(name, unit)
        if changed:
            state.apply()
        return PassResult(state, changed)

    return fixed_point([Pass("prune unread units", prune_round)], plan).rounds - 1


def conv_positions(model: nn.Module, inputs: Any) -> dict[str, int]:
    """Positions per convolution for one sample of ``inputs`` (for FLOP counts: a
    convolution's weights act at each output position, a transposed one's at each input)."""
    layers = {n: m for n, m in find_layers(model).items() if not isinstance(m, nn.Linear)}
    activity = collect(model, layers, next(iterate_inputs(inputs))[:1], "reference")
    return {name: stats.input_positions or stats.positions
            for name, stats in activity.layers.items()}


@dataclass(frozen=True)
class ReliefConfig:
    """The iterative procedure: alphas, calibration size and how to fine-tune after each pass."""

    iterations: int = 5
    alpha_fc: float = 0.95
    alpha_conv: float = 0.9
    calib_samples: int = 1000
    conv_score: str = "paper"
    finetune: FitConfig = field(default_factory=FitConfig)
    seed: int = 0
    target_remaining: float | None = None  # stop early once this weight fraction is reached
    blocks: int = 1  # > 1: connections only inside each unit's group (prune/blocks.py)

    def __post_init__(self) -> None:
        check_alpha(self.alpha_fc, "alpha_fc")
        check_alpha(self.alpha_conv, "alpha_conv")
        validate.integer("iterations", self.iterations, 1, 10_000)
        validate.integer("calib_samples", self.calib_samples, 1, 10_000_000)
        validate.choice("conv_score", self.conv_score, ("paper", "reference"))
        validate.integer("seed", self.seed, 0, 2**63 - 1)
        check_blocks(self.blocks)
        if not isinstance(self.finetune, FitConfig):
            raise ReliefError(f"finetune must be a FitConfig, got {self.finetune!r}")
        if self.target_remaining is not None:
            validate.number("target_remaining", self.target_remaining, 0.0, 1.0, open_low=True)


@dataclass
class ReliefResult:
    model: nn.Module
    history: list[dict[str, Any]]


@dataclass
class RunState:
    """Where an NNrelief run stands: the ``iteration`` in progress (or next to start), the
    history so far and, once that iteration's pruning is done, its fine-tuning state."""

    iteration: int
    history: list[dict[str, Any]]
    fit: FitState | None = None


class RunInterrupted(Exception):
    """A stop was requested (SIGTERM); ``state`` was handed to ``RunControl.save``."""

    def __init__(self, state: RunState):
        super().__init__("NNrelief stopped on request")
        self.state = state


@dataclass(frozen=True)
class RunControl:
    """For long runs: the process group, a state to resume from (the model must already
    hold its weights and masks), a ``save`` hook (called on every rank after every
    iteration, every ``save_every`` fine-tuning epochs and on a stop) and ``should_stop``."""

    world: World = LOCAL
    resume: RunState | None = None
    save: Callable[[RunState], None] | None = None
    save_every: int = 0
    should_stop: Callable[[], bool] = lambda: False


def relief(model: nn.Module, train_data: Dataset, config: ReliefConfig | None = None, *,
           val_data: Dataset | None = None, test_data: Dataset | None = None,
           rewind_to: dict[str, torch.Tensor] | None = None, progress: bool = True,
           control: RunControl | None = None, **overrides: Any) -> ReliefResult:
    """Prune, (optionally rewind,) fine-tune with masks fixed; repeat. History per iteration.

    Runs ``iterations`` passes, or fewer once ``target_remaining`` of the weights is reached.
    ``overrides`` set ReliefConfig fields by keyword (``iterations=10, alpha_fc=0.95``).
    ``control`` makes the run distributed, resumable and stoppable (see RunControl); raises
    RunInterrupted when stopped.
    """
    validate.module("model", model, "load a file with relief_export.load_model first")
    try:
        config = replace(config or ReliefConfig(), **overrides)
    except TypeError as error:
        raise ReliefError(f"relief: {error}") from None
    if not hasattr(train_data, "__len__") or not hasattr(train_data, "__getitem__"):
        raise ReliefError(f"train_data must be a data set, got {type(train_data).__name__}")
    if len(train_data) == 0:
        raise ReliefError("the training data is empty")
    control = control or RunControl()
    world, resume = control.world, control.resume
    positions = conv_positions(model, next(batches(train_data, 1))[0])
    history = list(resume.history) if resume else \
        [_record(0, model, positions, val_data, test_data, 0.0, world, config.finetune.task)]
    if resume is not None and len(history) > 1 and _reached(config, history[-1]):
        return ReliefResult(model, history)
    bar = show_progress(range(resume.iteration if resume else 1, config.iterations + 1),
                        desc="NNrelief", unit="iter", enabled=progress)
    for iteration in bar:
        start = time.perf_counter()
        fit_state = resume.fit if resume is not None and resume.iteration == iteration else None
        if fit_state is None:
            _prune_once(model, train_data, config, iteration, rewind_to, control)
        _fine_tune(model, train_data, val_data, config, iteration, history, fit_state,
                   control, progress)
        entry = _record(iteration, model, positions, val_data, test_data,
                        time.perf_counter() - start, world, config.finetune.task)
        history.append(entry)
        if control.save is not None:
            control.save(RunState(iteration + 1, history))
        bar.set_postfix(weights=f"{entry['remaining_weights']:.4f}",
                        val=f"{entry.get('val_accuracy', float('nan')):.4f}")
        if _reached(config, entry):
            break
    return ReliefResult(model, history)


def _reached(config: ReliefConfig, entry: dict[str, Any]) -> bool:
    return config.target_remaining is not None and \
        entry["remaining_weights"] <= config.target_remaining


def _prune_once(model: nn.Module, train_data: Dataset, config: ReliefConfig, iteration: int,
                rewind_to: dict[str, torch.Tensor] | None, control: RunControl) -> None:
    calibration = _calibration_batches(train_data, config, iteration, control.world)
    relief_step(model, calibration, alpha_fc=config.alpha_fc, alpha_conv=config.alpha_conv,
                conv_score=config.conv_score, blocks=config.blocks, world=control.world)
    if rewind_to is not None:
        rewind(model, rewind_to)


def _fine_tune(model: nn.Module, train_data: Dataset, val_data: Dataset | None,
               config: ReliefConfig, iteration: int, history: list[dict[str, Any]],
               fit_state: FitState | None, control: RunControl, progress: bool) -> None:
    save = control.save

    def save_fit(state: FitState) -> None:
        if save is not None:
            save(RunState(iteration, history, state))

    try:
        fit(model, train_data, replace(config.finetune, seed=config.seed + iteration),
            val_data, progress=progress, desc=f"fine-tune {iteration}",
            control=FitControl(control.world, fit_state, save_fit, control.save_every,
                               control.should_stop))
    except FitInterrupted as stop:
        save_fit(stop.state)
        raise RunInterrupted(RunState(iteration, history, stop.state)) from None


def _calibration_batches(train_data: Dataset, config: ReliefConfig, iteration: int,
                         world: World = LOCAL) -> list[torch.Tensor]:
    """``calib_samples`` random training samples (no augmentation), new ones every iteration;
    under torchrun this rank's share of them."""
    generator = torch.Generator().manual_seed(config.seed * 1000 + iteration)
    count = min(config.calib_samples, len(train_data))  # type: ignore[arg-type]
    chosen = torch.randperm(len(train_data), generator=generator)[:count]  # type: ignore[arg-type]
    if count < world.size:
        raise ReliefError(f"{count} calibration samples cannot be shared by {world.size} "
                          "processes; use more samples or fewer processes")
    shard = chosen[world.shard(count)] if world.distributed else chosen
    return [x for x, _ in batches(Subset(train_data, shard.tolist()), 250)]


def rewind(model: nn.Module, initial: dict[str, torch.Tensor]) -> None:
    """Reset surviving weights to their initial values; pruned ones stay 0 through the masks."""
    state = model.state_dict()
    with torch.no_grad():
        for name, value in initial.items():
            target = name + "_orig" if name + "_orig" in state else name
            if target in state and state[target].shape == value.shape:
                state[target].copy_(value)


def _record(iteration: int, model: nn.Module, positions: dict[str, int],
            val_data: Dataset | None, test_data: Dataset | None, seconds: float,
            world: World, task: str) -> dict[str, Any]:
    layers = find_layers(model)
    entry: dict[str, Any] = {"iteration": iteration, **summary(layer_densities(layers, positions))}
    if val_data is not None:
        entry["val_accuracy"] = evaluate(model, val_data, world=world, task=task)
    if test_data is not None:
        entry["test_accuracy"] = evaluate(model, test_data, world=world, task=task)
    entry["seconds"] = round(seconds, 3)
    return entry
