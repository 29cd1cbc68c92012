"""Training and evaluation: shuffled batches, validation-based model selection, seeded."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from .. import validate
from ..data.tensors import batches
from ..errors import ReliefError

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

    def __post_init__(self) -> None:
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


def fit(model: nn.Module, train_set: Dataset, config: FitConfig, val_set: Dataset | None = None,
        *, progress: bool = True, desc: str = "train") -> FitResult:
    """Train with cross-entropy; keep the weights of the epoch with the best validation accuracy.

    Parameters reparametrised by torch.nn.utils.prune (weight = weight_orig * weight_mask)
    train only their surviving entries, so pruned weights stay exactly 0.
    """
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model.to(config.device)
    optimizer = _optimizer(model, config)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(config.milestones),
                                                    config.gamma)
    result = FitResult()
    best_state = copy.deepcopy(model.state_dict())
    bar = tqdm(range(config.epochs), desc=desc, disable=None if progress else True,
               unit="epoch", leave=False)
    for epoch in bar:
        loss = _train_epoch(model, train_set, optimizer, config, generator)
        schedule.step()
        accuracy = evaluate(model, val_set, config.batch_size * 4, config.device) \
            if val_set is not None else -loss
        result.losses.append(loss)
        result.val_accuracies.append(accuracy)
        if result.best_epoch < 0 or accuracy > result.val_accuracies[result.best_epoch]:
            result.best_epoch = epoch
            best_state = copy.deepcopy(model.state_dict())
        bar.set_postfix(loss=f"{loss:.4f}", val=f"{accuracy:.4f}")
    model.load_state_dict(best_state)
    model.eval()
    return result


def _optimizer(model: nn.Module, config: FitConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay)


def _train_epoch(model: nn.Module, train_set: Dataset, optimizer: torch.optim.Optimizer,
                 config: FitConfig, generator: torch.Generator) -> float:
    model.train()
    total, count = 0.0, 0
    for images, labels in batches(train_set, config.batch_size, shuffle=True,
                                  generator=generator):
        if config.augment:
            images = augment(images, generator)
        images, labels = images.to(config.device), labels.to(config.device)
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(images), labels)
        if not torch.isfinite(loss):
            raise ReliefError(f"training diverged (loss {loss.item()}); lower the learning rate")
        loss.backward()
        optimizer.step()
        total += loss.item() * len(labels)
        count += len(labels)
    return total / max(count, 1)


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
             device: str = "cpu") -> float:
    """Top-1 accuracy in eval mode (0..1)."""
    if dataset is None or len(dataset) == 0:  # type: ignore[arg-type]
        raise ReliefError("cannot evaluate on an empty data set")
    was_training = model.training
    model.eval()
    correct = 0
    for images, labels in batches(dataset, batch_size):
        correct += int((model(images.to(device)).argmax(1).cpu() == labels).sum())
    model.train(was_training)
    return correct / len(dataset)  # type: ignore[arg-type]
