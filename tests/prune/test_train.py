import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from relief_export import data
from relief_export.data.tensors import ImageDataset
from relief_export.errors import ReliefError
from relief_export.prune.train import FitConfig, augment, evaluate, fit

from ..helpers import tiny_mlp

SPEC = "synthetic:1,4,4,3"


def test_fit_learns_the_synthetic_task():
    train, test = data.load(SPEC, "train"), data.load(SPEC, "test")
    model = tiny_mlp(16, 16, 3)
    result = fit(model, train, FitConfig(epochs=8, lr=1e-2), test, progress=False)
    assert evaluate(model, test) >= 0.9
    assert len(result.losses) == 8 and result.losses[-1] < result.losses[0]
    assert result.best_val_accuracy == max(result.val_accuracies)


def test_fit_is_reproducible_with_a_seed():
    train = data.load(SPEC, "train")
    weights = []
    for _ in range(2):
        torch.manual_seed(5)
        model = tiny_mlp(16, 8, 3)
        fit(model, train, FitConfig(epochs=2, seed=7), progress=False)
        weights.append(model[1].weight.detach().clone())
    assert torch.equal(weights[0], weights[1])


def test_fit_restores_the_best_validation_epoch():
    train = data.load(SPEC, "train")
    model = tiny_mlp(16, 8, 3)
    result = fit(model, train, FitConfig(epochs=4, lr=5e-2), data.load(SPEC, "test"),
                 progress=False)
    assert evaluate(model, data.load(SPEC, "test")) == result.best_val_accuracy


def test_pruned_weights_stay_exactly_zero_while_training():
    train = data.load(SPEC, "train")
    model = tiny_mlp(16, 8, 3)
    mask = (torch.rand(8, 16) > 0.7).float()
    prune.custom_from_mask(model[1], "weight", mask)
    fit(model, train, FitConfig(epochs=2, lr=1e-2, weight_decay=1e-3), progress=False)
    assert torch.count_nonzero(model[1].weight[mask == 0]) == 0
    assert torch.count_nonzero(model[1].weight[mask == 1]) == int(mask.sum())


def test_evaluate_counts_correct_predictions():
    images = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]).view(4, 1, 1, 2)
    labels = torch.tensor([1, 0, 0, 0])
    dataset = ImageDataset(images, labels, 2)
    identity = nn.Sequential(nn.Flatten())  # logits = the pixels: predicts argmax
    assert evaluate(identity, dataset, batch_size=3) == pytest.approx(0.75)


def test_augment_flips_and_shifts_each_sample():
    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(64, 1, 1, 1)
    out = augment(x, torch.Generator().manual_seed(0), pad=1)
    assert out.shape == x.shape
    centred = [bool(torch.equal(o, x[0]) or torch.equal(o, x[0].flip(2))) for o in out]
    assert 0 < sum(centred) < 64  # some samples unshifted, most shifted
    assert all(set(o.unique().tolist()) <= set(range(16)) for o in out)


@pytest.mark.parametrize("bad", [{"epochs": -1}, {"optimizer": "rmsprop"}, {"lr": 0.0},
                                 {"weight_decay": -1.0}, {"batch_size": 0},
                                 {"device": "cuda:7"} if not torch.cuda.is_available()
                                 else {"lr": float("nan")}])
def test_bad_fit_config(bad):
    with pytest.raises(ReliefError):
        FitConfig(**bad)


def test_divergence_is_a_clear_error():
    train = data.load(SPEC, "train")
    model = tiny_mlp(16, 8, 3)
    with torch.no_grad():
        model[1].weight[0, 0] = float("nan")
    with pytest.raises(ReliefError, match="diverged"):
        fit(model, train, FitConfig(epochs=1), progress=False)
