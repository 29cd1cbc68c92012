"""Training and evaluation: shuffled batches, validation-based model selection, seeded."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, DistributedSampler, Subset

from .. import validate
from ..data.tensors import batches
from ..errors import ReliefError
from ..progress import progress as show_progress
from .distributed import LOCAL, World
from .tasks import LOSSES, TASKS, primary_output

MAX_EPOCHS = 100_000
MAX_BATCH = 1 << 20


@dataclass(frozen=True)
class FitConfig:
    """How to train. ``milestones``: epochs at which the learning rate is multiplied by gamma."""

    epochs: int = 20
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    batch_size: int = 64
    seed: int = 0
    device: str = "cpu"
    augment: bool = False
    task: str = "classification"
    loss: str | None = None  # None: the task's default (tasks.TASKS)

    def __post_init__(self) -> None:
        validate.choice("task", self.task, tuple(TASKS))
        if self.loss is not None:
            validate.choice("loss", self.loss, tuple(LOSSES))
        validate.integer("epochs", self.epochs, 0, MAX_EPOCHS)
        validate.integer("batch size", self.batch_size, 1, MAX_BATCH)
        validate.integer("seed", self.seed, 0, 2**63 - 1)
        validate.choice("optimizer", self.optimizer, ("adam", "sgd"))
        validate.number("lr", self.lr, 0.0, 1e3, open_low=True)
        validate.number("weight decay", self.weight_decay, 0.0, 1e3)
        validate.number("momentum", self.momentum, 0.0, 1.0)
        validate.number("gamma", self.gamma, 0.0, 1e3, open_low=True)
        validate.integers("milestones", self.milestones or (1,), 0, MAX_EPOCHS)
        validate.device("device", self.device)


@dataclass
class FitResult:
    """Per-epoch training loss and validation accuracy; the epoch whose weights were kept."""

    losses: list[float] = field(default_factory=list)
    val_accuracies: list[float] = field(default_factory=list)
    best_epoch: int = -1

    @property
    def best_val_accuracy(self) -> float:
        return self.val_accuracies[self.best_epoch] if self.best_epoch >= 0 else float("nan")


@dataclass
class FitState:
    """Where ``fit`` stands, enough to continue exactly: ``epoch`` epochs done and ``batch``
    batches of the next; the generator states are this rank's (``epoch_generator``: when the
    epoch began, which fixes its order; ``generator`` and ``rng``: now)."""

    epoch: int = 0
    batch: int = 0
    loss_sum: float = 0.0
    loss_count: int = 0
    result: FitResult = field(default_factory=FitResult)
    best_state: dict[str, torch.Tensor] | None = None
    optimizer: dict[str, Any] | None = None
    schedule: dict[str, Any] | None = None
    epoch_generator: torch.Tensor | None = None
    generator: torch.Tensor | None = None
    rng: torch.Tensor | None = None


class FitInterrupted(Exception):
    """A stop was requested; ``state`` is where fit stood, after a whole batch."""

    def __init__(self, state: FitState):
        super().__init__("training stopped on request")
        self.state = state


@dataclass(frozen=True)
class FitControl:
    """For long runs: the process group, a state to resume, a ``save`` hook called every
    ``save_every`` epochs, and ``should_stop`` polled after every batch (on every rank)."""

    world: World = LOCAL
    resume: FitState | None = None
    save: Callable[[FitState], None] | None = None
    save_every: int = 0
    should_stop: Callable[[], bool] = lambda: False


def fit(model: nn.Module, train_set: Dataset, config: FitConfig, val_set: Dataset | None = None,
        *, progress: bool = True, desc: str = "train",
        control: FitControl | None = None) -> FitResult:
    """Train with the task's loss (``config.loss``); keep the weights of the epoch with the best
    validation score (accuracy, or R^2 for regression: prune/tasks.py).

    Parameters reparametrised by torch.nn.utils.prune (weight = weight_orig * weight_mask)
    train only their surviving entries, so pruned weights stay exactly 0 (whatever weight
    decay, momentum or DDP's gradient averaging do to ``weight_orig``). Under torchrun the
    model trains as DistributedDataParallel on a DistributedSampler shard reshuffled every
    epoch. Raises FitInterrupted when ``control.should_stop()`` turns true.
    """
    control = control or FitControl()
    world, state = control.world, control.resume or FitState()
    if control.resume is None:
        torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed + world.rank)
    model.to(config.device)
    trained = DistributedDataParallel(model) if world.distributed else model
    optimizer = _optimizer(model, config)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(config.milestones),
                                                    config.gamma)
    _restore(state, optimizer, schedule, generator)
    best_state = state.best_state or copy.deepcopy(model.state_dict())
    bar = show_progress(range(state.epoch, config.epochs), desc=desc, unit="epoch",
                        leave=False, enabled=progress)
    for epoch in bar:
        if state.batch == 0:
            state.epoch_generator = generator.get_state()
        for images, labels in _epoch_batches(train_set, config, world, epoch, generator, state):
            _step(trained, optimizer, images, labels, config, generator, state)
            if world.any(control.should_stop()):
                raise FitInterrupted(_snapshot(state, best_state, optimizer, schedule,
                                               generator))
        loss = _epoch_loss(state, world)
        schedule.step()
        accuracy = evaluate(model, val_set, config.batch_size * 4, config.device, world,
                            config.task) if val_set is not None else -loss
        state.result.losses.append(loss)
        state.result.val_accuracies.append(accuracy)
        if state.result.best_epoch < 0 or \
                accuracy > state.result.val_accuracies[state.result.best_epoch]:
            state.result.best_epoch = epoch
            best_state = copy.deepcopy(model.state_dict())
        state.epoch, state.batch, state.loss_sum, state.loss_count = epoch + 1, 0, 0.0, 0
        bar.set_postfix(loss=f"{loss:.4f}", val=f"{accuracy:.4f}")
        if control.save is not None and control.save_every and \
                state.epoch % control.save_every == 0 and state.epoch < config.epochs:
            control.save(_snapshot(state, best_state, optimizer, schedule, generator))
    model.load_state_dict(best_state)
    model.eval()
    return state.result


def _epoch_batches(train_set: Dataset, config: FitConfig, world: World, epoch: int,
                   generator: torch.Generator, state: FitState) -> Iterator[tuple]:
    """This rank's batches of the epoch, from batch ``state.batch`` on: one process shuffles
    with its generator (as it always has); under torchrun a DistributedSampler (seed, epoch)
    picks the rank's shard. Augmentation draws come from the generator."""
    resumed, start = generator.get_state(), state.batch
    if world.distributed:
        sampler: DistributedSampler = DistributedSampler(
            train_set, world.size, world.rank, shuffle=True, seed=config.seed)
        sampler.set_epoch(epoch)
        epoch_batches = batches(Subset(train_set, list(sampler)), config.batch_size)
    else:
        assert state.epoch_generator is not None
        generator.set_state(state.epoch_generator)
        epoch_batches = batches(train_set, config.batch_size, shuffle=True, generator=generator)
    for index, (images, labels) in enumerate(epoch_batches):
        if index < start:
            continue
        if index == start and start > 0:
            generator.set_state(resumed)  # the draws made before the interruption
        yield (augment(images, generator) if config.augment else images), labels


def _step(trained: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
          labels: torch.Tensor, config: FitConfig, generator: torch.Generator,
          state: FitState) -> None:
    trained.train()
    images, labels = images.to(config.device), labels.to(config.device)
    optimizer.zero_grad(set_to_none=True)
    loss = LOSSES[config.loss or TASKS[config.task].loss](primary_output(trained(images)), labels)
    if not torch.isfinite(loss):
        raise ReliefError(f"training diverged (loss {loss.item()}); lower the learning rate")
    loss.backward()
    optimizer.step()
    state.loss_sum += loss.item() * len(labels)
    state.loss_count += len(labels)
    state.batch += 1


def _epoch_loss(state: FitState, world: World) -> float:
    """Mean training loss of the epoch over every rank's samples."""
    totals = world.sum(torch.tensor([state.loss_sum, float(state.loss_count)],
                                    dtype=torch.float64))
    return float(totals[0] / max(float(totals[1]), 1.0))


def _snapshot(state: FitState, best_state: dict[str, torch.Tensor],
              optimizer: torch.optim.Optimizer, schedule: Any,
              generator: torch.Generator) -> FitState:
    return replace(state, result=copy.deepcopy(state.result),
                   best_state=copy.deepcopy(best_state),
                   optimizer=copy.deepcopy(optimizer.state_dict()),
                   schedule=copy.deepcopy(schedule.state_dict()),
                   generator=generator.get_state(), rng=torch.get_rng_state())


def _restore(state: FitState, optimizer: torch.optim.Optimizer, schedule: Any,
             generator: torch.Generator) -> None:
    if state.optimizer is not None:
        optimizer.load_state_dict(state.optimizer)
    if state.schedule is not None:
        schedule.load_state_dict(state.schedule)
    if state.generator is not None:
        generator.set_state(state.generator)
    if state.rng is not None:
        torch.set_rng_state(state.rng)


def _optimizer(model: nn.Module, config: FitConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay)


def augment(images: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Per sample: random horizontal flip, then a random crop after zero-padding by ``pad``."""
    flip = torch.rand(len(images), generator=generator) < 0.5
    images = torch.where(flip.view(-1, 1, 1, 1), images.flip(3), images)
    padded = F.pad(images, (pad, pad, pad, pad))
    count, _, height, width = images.shape
    dy, dx = torch.randint(0, 2 * pad + 1, (2, count, 1), generator=generator)
    rows = (dy + torch.arange(height)).unsqueeze(2)
    cols = (dx + torch.arange(width)).unsqueeze(1)
    crops = padded[torch.arange(count).view(-1, 1, 1), :, rows, cols]  # N x H x W x C
    return crops.permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset | None, batch_size: int = 256,
             device: str = "cpu", world: World = LOCAL, task: str = "classification") -> float:
    """The task's score in eval mode (top-1 accuracy 0..1; R^2 for regression); under
    torchrun each rank scores a shard and the sums are added."""
    if dataset is None or len(dataset) == 0:  # type: ignore[arg-type]
        raise ReliefError("cannot evaluate on an empty data set")
    was_training = model.training
    model.eval()
    shard = Subset(dataset, world.shard(len(dataset))) if world.distributed else dataset  # type: ignore[arg-type]
    scoring = TASKS[task]
    totals = torch.zeros(scoring.width, dtype=torch.float64)
    for images, labels in batches(shard, batch_size):
        totals += scoring.sums(primary_output(model(images.to(device))).cpu(), labels)
    model.train(was_training)
    return scoring.score(world.sum(totals))
