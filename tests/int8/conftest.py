import pytest
import torch
from torch.nn.utils import prune

from relief_export import data, models, save_checkpoint
from relief_export.prune import FitConfig, fit


@pytest.fixture(scope="session")
def trained_lenet(tmp_path_factory):
    """LeNet-300-100 trained on the packaged MNIST digits, 90% of each layer's weights and
    40 hidden units masked (torch.nn.utils.prune), fine-tuned: a checkpoint naming mnist5k
    (about 86% test accuracy)."""
    torch.manual_seed(0)
    model = models.build("lenet300_100")
    train = data.load("mnist5k", "train")
    fit(model, train, FitConfig(epochs=3), progress=False)
    for layer in (model[1], model[3], model[5]):
        prune.l1_unstructured(layer, "weight", amount=0.9)
    with torch.no_grad():
        model[1].weight_mask[:40] = 0
    fit(model, train, FitConfig(epochs=2), progress=False)
    folder = tmp_path_factory.mktemp("int8")
    return save_checkpoint(folder / "lenet.pt", model,
                           arch={"name": "lenet300_100", "kwargs": {}},
                           input_shape=[1, 1, 28, 28], data="mnist5k")
