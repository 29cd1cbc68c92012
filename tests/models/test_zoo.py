import math

import pytest
import torch

from relief_export import models
from relief_export.errors import ReliefError

PARAMS = {
    "lenet300_100": 266_610,
    "lenet5": 431_080,
    "vgg11": 9_493_770,
    "vgg13": 9_678_666,
    "vgg16": 14_990_922,
    "vgg19": 20_303_178,
    "vgg_like": 14_728_266,
    "resnet20": 269_722,
    "resnet32": 464_154,
    "resnet44": 658_586,
    # option A (parameter-free shortcuts); 855,770 is the count with option B projections
    "resnet56": 853_018,
    "resnet110": 1_727_962,
    "resnet18": 11_181_642,
    "resnet34": 21_289_802,
}


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_names_lists_the_whole_zoo():
    assert sorted(models.names()) == sorted(PARAMS)


@pytest.mark.parametrize("name", list(PARAMS))
def test_parameter_count_and_output_shape(name):
    model = models.build(name).eval()
    assert count(model) == PARAMS[name]
    with torch.no_grad():
        out = model(torch.randn(models.input_shape(name, batch=3)))
    assert out.shape == (3, 10)
    assert torch.isfinite(out).all()


def test_resnet18_at_1000_classes_matches_torchvision_count():
    assert count(models.build("resnet18", num_classes=1000)) == 11_689_512


def test_resnet18_uses_torchvision_parameter_names():
    keys = set(models.build("resnet18").state_dict())
    for key in ("conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight",
                "layer2.0.downsample.0.weight", "layer2.0.downsample.1.bias",
                "layer4.1.bn2.weight", "fc.weight", "fc.bias"):
        assert key in keys


def test_num_classes_and_in_channels():
    model = models.build("vgg11", num_classes=100, in_channels=1).eval()
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 100)
    lenet = models.build("lenet300_100", in_channels=3)
    assert lenet[1].in_features == 3 * 28 * 28


def test_kaiming_normal_fan_out_init():
    torch.manual_seed(1)
    conv = models.build("vgg16").features[0]
    expected_std = math.sqrt(2.0 / (64 * 3 * 3))  # fan_out = out_channels * k * k
    assert conv.weight.std().item() == pytest.approx(expected_std, rel=0.1)
    assert torch.count_nonzero(conv.bias) == 0


def test_option_a_shortcut_pads_channels_with_zeros():
    block = models.build("resnet20").layer2[0]
    x = torch.randn(1, 16, 8, 8)
    shortcut = block.shortcut(x)
    assert shortcut.shape == (1, 32, 4, 4)
    assert torch.equal(shortcut[:, 8:24], x[:, :, ::2, ::2])
    assert torch.count_nonzero(shortcut[:, :8]) == 0 and torch.count_nonzero(shortcut[:, 24:]) == 0


@pytest.mark.parametrize("bad", [{"name": "alexnet"}, {"name": "lenet5", "num_classes": 0}])
def test_bad_build_arguments_raise_clear_errors(bad):
    with pytest.raises(ReliefError, match="alexnet|num_classes"):
        models.build(**bad)
