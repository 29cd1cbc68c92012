import importlib.util
from pathlib import Path

import pytest

from relief_export import save_checkpoint

TOOLS = Path(__file__).resolve().parents[2] / "tools"


@pytest.fixture(scope="session")
def trained_lenet(tmp_path_factory):
    """LeNet-300-100 trained on the packaged MNIST digits, 90% of each layer's weights and
    40 hidden units masked (torch.nn.utils.prune), fine-tuned (the recipe of
    tools/int8_saturation.py, which measures this model): a checkpoint naming mnist5k (about
    86% test accuracy)."""
    spec = importlib.util.spec_from_file_location("relief_int8_saturation",
                                                  TOOLS / "int8_saturation.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    folder = tmp_path_factory.mktemp("int8")
    return save_checkpoint(folder / "lenet.pt", tool.trained_lenet(),
                           arch={"name": "lenet300_100", "kwargs": {}},
                           input_shape=[1, 1, 28, 28], data="mnist5k")
