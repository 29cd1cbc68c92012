"""What a model is trained for: one table of tasks (default loss, and the score reported as
"accuracy" in histories) and one of losses. Outputs are read through ``primary_output``: a
tensor, the ``logits`` of a dict-like output (Hugging Face ``ModelOutput``), or the first
element of a tuple.

Scores from additive sums (so shards and batches add up):
- classification: top-1 accuracy = correct / n.
- token-classification: accuracy over tokens whose label is not -100.
- regression: R^2 = 1 - SSE / SST, SST = sum y^2 - (sum y)^2 / n.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ReliefError

IGNORED = -100


def primary_output(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    logits = output.get("logits") if hasattr(output, "get") else None
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise ReliefError(f"cannot read a prediction from a model output of type "
                      f"{type(output).__name__} (expected a tensor, .logits or a tuple)")


def _cross_entropy(output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if output.ndim > 2:  # per token: [N, L, K] against [N, L]
        output, labels = output.flatten(0, -2), labels.flatten()
    return F.cross_entropy(output, labels.long(), ignore_index=IGNORED)


def _targets(output: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if output.numel() != labels.numel():
        raise ReliefError(f"regression outputs {list(output.shape)} do not match targets "
                          f"{list(labels.shape)}")
    return output.reshape(labels.shape), labels.float()


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "cross-entropy": _cross_entropy,
    "mse": lambda output, labels: F.mse_loss(*_targets(output, labels)),
    "l1": lambda output, labels: F.l1_loss(*_targets(output, labels)),
    "smooth-l1": lambda output, labels: F.smooth_l1_loss(*_targets(output, labels)),
}


def _correct(output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    counted = labels != IGNORED
    hits = (output.argmax(-1) == labels) & counted
    return torch.tensor([float(hits.sum()), float(counted.sum())], dtype=torch.float64)


def _regression_sums(output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    prediction, target = (t.double() for t in _targets(output, labels))
    return torch.stack([((prediction - target) ** 2).sum(), target.sum(), (target ** 2).sum(),
                        torch.tensor(float(target.numel()), dtype=torch.float64)])


def _r2(sums: torch.Tensor) -> float:
    sse, total, squares, count = (float(v) for v in sums)
    sst = squares - total * total / max(count, 1.0)
    return 1.0 - sse / sst if sst > 0 else float("nan")


@dataclass(frozen=True)
class Task:
    """``sums(output, labels)``: additive statistics; ``score(totals)``: the reported score."""

    loss: str
    sums: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    score: Callable[[torch.Tensor], float]
    label_dtype: str  # "int64" or "float"
    width: int  # how many sums


def _accuracy(totals: torch.Tensor) -> float:
    return float(totals[0] / totals[1]) if totals[1] > 0 else float("nan")


TASKS: dict[str, Task] = {
    "classification": Task("cross-entropy", _correct, _accuracy, "int64", 2),
    "token-classification": Task("cross-entropy", _correct, _accuracy, "int64", 2),
    "regression": Task("mse", _regression_sums, _r2, "float", 4),
}


def check_labels(task: str, labels: torch.Tensor, where: str) -> None:
    """The data's labels must be what the task trains on (integer targets serve regression)."""
    if TASKS[task].label_dtype == "int64" and labels.is_floating_point():
        raise ReliefError(f"{where} holds fractional targets, which task {task!r} does not "
                          "train on; use --task regression")
    if task == "token-classification" and labels.ndim != 2:
        raise ReliefError(f"{where}: token-classification needs one label per token "
                          f"(N x L labels), got {list(labels.shape)}")
