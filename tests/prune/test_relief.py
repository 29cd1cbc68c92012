import pytest
import torch
import torch.nn.functional as F
from torch import nn

from relief_export import data, models
from relief_export.channels import read_units
from relief_export.errors import ReliefError
from relief_export.graph.masks import effective_state_dict
from relief_export.prune import FitConfig, ReliefConfig, relief, relief_step
from relief_export.prune.structure import discover, find_layers, out_units

from ..helpers import zoo_params
from .test_scores import GOLDEN_INPUTS, golden_linear


def test_golden_step_masks_and_applies_them():
    model = golden_linear()
    masks = relief_step(model, GOLDEN_INPUTS, alpha_fc=0.6)
    assert masks["0.weight"].tolist() == [[True, True, False], [False, True, True]]
    assert masks["0.bias"].tolist() == [False, False]
    assert torch.equal(model[0].weight, torch.tensor([[1.0, -2.0, 0.0], [0.0, 3.0, -1.0]]))
    assert torch.count_nonzero(model[0].bias) == 0
    assert hasattr(model[0], "weight_orig")  # held as torch.nn.utils.prune masks


def mlp_with_dead_and_unread_units() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3), nn.ReLU(),
                          nn.Linear(3, 2))
    with torch.no_grad():
        model[0].weight.abs_()
        model[0].bias.zero_()
        model[0].bias[1] = -100.0  # hidden unit 1 never fires on inputs in [0, 1]
        model[2].weight[:, 3] = 0.0  # nobody reads hidden unit 3
    return model


def test_dead_and_unread_units_lose_all_incoming_connections():
    model = mlp_with_dead_and_unread_units()
    masks = relief_step(model, torch.rand(64, 4), alpha_fc=1.0)
    assert not masks["0.weight"][1].any() and not masks["0.bias"][1]  # dead
    assert not masks["0.weight"][3].any() and not masks["0.bias"][3]  # unread
    assert not masks["2.weight"][:, 1].any()  # reading a unit that is always 0 scores 0
    assert masks["0.weight"][[0, 2, 4]].all()  # alpha = 1 keeps every live connection


def test_backward_pruning_reaches_a_fixed_point_through_layers():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(),
                          nn.Linear(4, 2))
    with torch.no_grad():
        model[4].weight[:, 2] = 0.0  # unit 2 of layer 2 unread ...
        model[2].weight[:, 0] = 0.0  # ... and unit 0 of layer 0 read only by ...
        model[2].weight[2, 0] = 1.0  # ... unit 2 of layer 2
    masks = relief_step(model, torch.rand(32, 3), alpha_fc=1.0)
    assert not masks["2.weight"][2].any()
    assert not masks["0.weight"][0].any() and not masks["0.bias"][0]


class ConvToLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, bias=False)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 2 * 2, 2)

    def forward(self, x):
        return self.fc(torch.flatten(F.relu(self.bn(self.conv(x))), 1))


def test_conv_channel_unread_through_flatten_loses_filter_and_batchnorm():
    model = ConvToLinear()
    with torch.no_grad():
        model.bn.bias.fill_(1.0)  # every channel fires
        model.fc.weight[:, 4:8] = 0.0  # features of channel 1 (2 x 2 each)
    masks = relief_step(model, torch.rand(16, 1, 4, 4), alpha_conv=1.0, alpha_fc=1.0)
    assert not masks["conv.weight"][1].any()
    assert not masks["bn.weight"][1] and not masks["bn.bias"][1]
    assert masks["conv.weight"][[0, 2]].all()
    model.eval()
    assert torch.count_nonzero(model.bn(torch.randn(2, 3, 2, 2))[:, 1]) == 0


class GatedBlock(nn.Module):
    """x -> relu(bn(conv(x)) + x * gate), two channels."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(2)
        self.register_buffer("gate", torch.ones(2))

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)) + x * self.gate.view(1, -1, 1, 1))


def test_residual_rule_prunes_the_weak_side_per_channel():
    model = GatedBlock().eval()
    with torch.no_grad():
        model.conv.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
        model.bn.weight.copy_(torch.tensor([100.0, 0.01]))  # branch strong on 0, weak on 1
        model.bn.bias.zero_()
    x = torch.rand(8, 2, 3, 3) + 0.5
    masks = relief_step(model, x, alpha_conv=0.9)
    assert masks["gate"].tolist() == [False, True]  # shortcut share of channel 0 < 10%
    assert not masks["conv.weight"][1].any() and not masks["bn.weight"][1]  # branch on 1
    assert masks["conv.weight"][0, 0].item()
    assert model.gate.tolist() == [0.0, 1.0]


def test_previously_pruned_weights_stay_pruned():
    model = golden_linear()
    first = relief_step(model, GOLDEN_INPUTS, alpha_fc=0.6)
    second = relief_step(model, GOLDEN_INPUTS * 10, alpha_fc=1.0)
    assert not (second["0.weight"] & ~first["0.weight"]).any()


@pytest.mark.parametrize("name", zoo_params())
def test_every_zoo_model_is_pruned_without_leaving_unread_units(name):
    torch.manual_seed(0)
    model = models.build(name).eval()
    samples = 4 if name in ("resnet18", "resnet34") else 16
    x = torch.rand(models.input_shape(name, batch=samples))
    masks = relief_step(model, x, alpha_fc=0.9, alpha_conv=0.8)
    parameters = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    for key, mask in masks.items():
        base = parameters.get(key + "_orig", buffers.get(key))
        assert base is not None and base.shape == mask.shape, key
    layers = find_layers(model)
    kept = sum(int(masks[f"{n}.weight"].sum()) for n in layers)
    assert 0 < kept < sum(m.weight.numel() for m in layers.values())
    read = read_units(_traced(model, x))
    for layer_name, layer in layers.items():
        for unit in range(out_units(layer)):
            if (layer_name, unit) not in read:
                assert torch.count_nonzero(layer.weight[unit]) == 0, (layer_name, unit)


def _traced(model, x):
    from relief_export.prune.activity import collect

    structure = discover(model)
    collect(model, structure.layers, x[:2], "reference", structure.graph_module)
    return structure.graph_module


class AuthorsStyleBlock(nn.Module):
    """A residual block written the way the released NNrelief code writes it: an in-place
    add of the shortcut times a per-channel mask, and a lambda shortcut with channel padding."""

    def __init__(self, planes=4):
        super().__init__()
        self.conv1 = nn.Conv2d(planes // 2, planes, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.register_buffer("mask", torch.ones(planes))
        self.pad = planes // 4

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        out += shortcut * self.mask.view(-1, 1, 1)
        return F.relu(out)


def test_a_user_model_in_the_authors_style():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), AuthorsStyleBlock(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    masks = relief_step(model, torch.rand(8, 1, 8, 8), alpha_conv=0.9)
    assert masks["2.mask"].tolist()[0] is False and masks["2.mask"].tolist()[3] is False
    assert "2.conv2.weight" in masks and "2.bn2.weight" in masks


def test_bad_inputs_leave_the_model_unchanged():
    model = mlp_with_dead_and_unread_units()
    before = effective_state_dict(model)
    cases = [
        ({"inputs": torch.rand(8, 4), "alpha_fc": 1.5}, "alpha_fc"),
        ({"inputs": torch.rand(8, 4), "alpha_conv": 0.0}, "alpha_conv"),
        ({"inputs": torch.rand(0, 4)}, "empty"),
        ({"inputs": []}, "empty"),
        ({"inputs": torch.rand(8, 7)}, r"shape \[8, 7\] do not fit"),
        ({"inputs": torch.full((8, 4), float("nan"))}, "NaN"),
        ({"inputs": torch.rand(8, 4), "conv_score": "fast"}, "conv_score"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ReliefError, match=message):
            relief_step(model, **kwargs)
    after = effective_state_dict(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not hasattr(model[0], "weight_mask")


def test_nan_weights_and_models_without_layers():
    model = mlp_with_dead_and_unread_units()
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
    with pytest.raises(ReliefError, match="'2.weight'"):
        relief_step(model, torch.rand(8, 4))
    with pytest.raises(ReliefError, match="no Linear, Conv1d or Conv2d"):
        relief_step(nn.Sequential(nn.ReLU()), torch.rand(8, 4))


def test_nan_activations_are_reported():
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
    with torch.no_grad():
        model[0].weight.fill_(1e38)
        model[2].weight.fill_(1e38)
    with pytest.raises(ReliefError, match="NaN or infinite"):
        relief_step(model, torch.ones(4, 2))


def test_relief_loop_keeps_masks_during_fine_tuning_and_records_history():
    train = data.load("synthetic:1,6,6,3", "train")
    test = data.load("synthetic:1,6,6,3", "test")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.ReLU(), nn.Linear(16, 3))
    config = ReliefConfig(iterations=2, calib_samples=200, finetune=FitConfig(epochs=2))
    result = relief(model, train, config, val_data=test, test_data=test, progress=False)
    assert [h["iteration"] for h in result.history] == [0, 1, 2]
    assert result.history[0]["remaining_weights"] == 1.0
    weights = [h["remaining_weights"] for h in result.history]
    assert weights[2] < weights[1] < 1.0
    mask = model[1].weight_mask.bool()
    assert torch.count_nonzero(model[1].weight[~mask]) == 0
    nonzero = sum(int(torch.count_nonzero(model[i].weight)) +
                  int(torch.count_nonzero(model[i].bias)) for i in (1, 3))
    assert result.history[-1]["nonzero_weights"] == nonzero
    assert result.history[-1]["test_accuracy"] > 0.5


def test_rewind_resets_surviving_weights_to_their_initial_values():
    train = data.load("synthetic:1,4,4,3", "train")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    initial = effective_state_dict(model)
    relief(model, train, ReliefConfig(iterations=1, finetune=FitConfig(epochs=0)),
           rewind_to=initial, progress=False)
    mask = model[1].weight_mask
    assert torch.equal(model[1].weight, initial["1.weight"] * mask)


def test_transposed_convolutions_are_pruned_along_their_output_axis():
    """A UNet: the ConvTranspose2d's units are its weight's axis 1. A unit that never fires
    (filters zero, bias -1 under a ReLU) loses its weights and bias along that axis; so does
    every unit whose channel the decoder no longer reads (backward pruning); compaction then
    removes them exactly."""
    from relief_export.bench.families import SmallUNet
    from relief_export.compile import compact_with_report

    torch.manual_seed(0)
    model = SmallUNet().eval()
    with torch.no_grad():
        model.up.weight[:, 3] = 0
        model.up.bias[3] = -1.0
    x = torch.randn(16, 3, 8, 8)
    masks = relief_step(model, x, alpha_conv=0.99)
    assert masks["up.weight"].shape == (16, 8, 2, 2)
    units = masks["up.weight"].any(dim=(0, 2, 3))
    read = masks["dec.0.weight"].any(dim=(0, 2, 3))[:8]  # up's channels come first in the cat
    assert not units[3] and not masks["up.bias"][3]
    assert units.tolist() == read.tolist() and 0 < int(units.sum()) < 8
    assert torch.equal(masks["up.bias"], units)
    small, report = compact_with_report(model, x[:2])
    up = next(change for change in report.layers if change.name == "up")
    assert up.shape_after[0] == int(units.sum())  # shape_after is the [out, in, k, k] view
    with torch.no_grad():
        assert torch.allclose(small(x), model(x), atol=1e-5)
