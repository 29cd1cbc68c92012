"""Tasks and losses: scores computed by hand."""

import pytest
import torch

from relief_export.errors import ReliefError
from relief_export.prune.tasks import LOSSES, TASKS, check_labels, primary_output


def test_regression_r2_by_hand():
    task = TASKS["regression"]
    output, target = torch.tensor([[1.0], [2.0], [4.0]]), torch.tensor([1.0, 3.0, 5.0])
    totals = task.sums(output[:2], target[:2]) + task.sums(output[2:], target[2:])
    # SSE = 0 + 1 + 1 = 2; mean 3, SST = 4 + 0 + 4 = 8; R^2 = 1 - 2/8
    assert task.score(totals) == pytest.approx(0.75)


def test_token_accuracy_ignores_minus_100():
    task = TASKS["token-classification"]
    logits = torch.tensor([[[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]]])  # predicts 0, 1, 0
    labels = torch.tensor([[0, 0, -100]])
    assert task.score(task.sums(logits, labels)) == pytest.approx(0.5)
    loss = LOSSES["cross-entropy"](logits, labels)
    expected = (torch.log1p(torch.exp(torch.tensor(-2.0))) +
                torch.log1p(torch.exp(torch.tensor(2.0)))) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_primary_output_and_label_checks():
    x = torch.ones(2, 3)
    assert primary_output({"logits": x}) is x and primary_output((x, None)) is x
    with pytest.raises(ReliefError, match="cannot read a prediction"):
        primary_output("text")
    with pytest.raises(ReliefError, match="--task regression"):
        check_labels("classification", torch.tensor([0.5]), "--data x")
    with pytest.raises(ReliefError, match="one label per token"):
        check_labels("token-classification", torch.tensor([1, 0]), "--data x")
    check_labels("regression", torch.tensor([1, 0]), "--data x")


def test_catalog_names_match_the_tables():
    from relief_export import catalog, data, models

    assert tuple(TASKS) == catalog.TASK_NAMES and tuple(LOSSES) == catalog.LOSS_NAMES
    assert tuple(catalog.ZOO_NAMES) == tuple(models.names())
    assert all(loader.usage.split(":")[0].strip("[") in catalog.SPEC_HELP
               for loader in data.LOADERS.values())
