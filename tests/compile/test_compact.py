import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import prune

from relief_export import compact, compact_with_report, data, models
from relief_export.errors import ReliefError

from ..helpers import outputs
from .masking import random_masks

SMALL = ["lenet300_100", "lenet5", "vgg11", "vgg_like", "resnet20", "resnet32"]
LARGE = ["vgg13", "vgg16", "vgg19", "resnet44", "resnet56", "resnet110", "resnet18",
         "resnet34"]


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |a| (an all-zero output must be matched exactly)."""
    return float((a - b).abs().max() / a.abs().max().clamp_min(1e-12))


def check_exact_and_minimal(model: nn.Module, shape: list[int], seed: int = 0,
                            partial_add_cost: float = 256.0):
    example = torch.rand(shape)
    compacted, report = compact_with_report(model, example,
                                            partial_add_cost=partial_add_cost)
    generator = torch.Generator().manual_seed(seed)
    for x in (torch.randn(shape, generator=generator), example):
        assert relative_error(outputs(model, x), outputs(compacted, x)) <= 1e-5
    parameters = sum(p.numel() for p in compacted.parameters())
    assert parameters == report.params_after or report.batchnorm_folded or \
        parameters >= report.params_after  # BatchNorm parameters are not layer parameters
    for change in report.layers:
        assert change.params_after <= change.params_before
    again = compact_with_report(compacted, example, partial_add_cost=partial_add_cost)[1]
    assert again.params_after == again.params_before, "a second pass still found work"
    zero_rows = {}
    for name, module in compacted.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            zero_rows[name] = int((module.weight.flatten(1) == 0).all(1).sum())
    for change in report.layers:  # every unit left with no input weight is explained
        if change.name in zero_rows:
            assert zero_rows[change.name] <= change.kept_constant, change
            assert len(change.kept_reasons) > 0 or change.kept_constant == 0
    return compacted, report


@pytest.mark.parametrize("name", SMALL)
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), partial_add_cost=st.sampled_from([2.0, 256.0]))
def test_zoo_models_under_random_masks(name, seed, partial_add_cost):
    torch.manual_seed(seed)
    model = models.build(name).eval()
    random_masks(model, seed)
    check_exact_and_minimal(model, models.input_shape(name, batch=2), seed, partial_add_cost)


@pytest.mark.parametrize("name", LARGE)
def test_large_zoo_models_under_random_masks(name):
    torch.manual_seed(1)
    model = models.build(name).eval()
    random_masks(model, 1)
    _, report = check_exact_and_minimal(model, models.input_shape(name, batch=2))
    assert report.params_after < report.params_before


def test_pruned_lenet_on_real_digits():
    torch.manual_seed(0)
    model = models.build("lenet300_100").eval()
    prune.l1_unstructured(model[1], "weight", amount=0.95)
    prune.l1_unstructured(model[3], "weight", amount=0.9)
    with torch.no_grad():
        model[1].weight_orig[:50] = 0  # 50 units emit relu(bias): constants to fold
        model[1].bias[:50] = torch.linspace(-1, 1, 50)
        model[1].weight_orig[:, :28] = 0  # the top row of pixels is never read
    digits, _ = data.load("mnist5k", "test").tensors()
    compacted, report = compact_with_report(model, digits[:4])
    assert relative_error(outputs(model, digits), outputs(compacted, digits)) <= 1e-5
    assert report.input_features_dropped >= 28
    assert report.layers[0].removed_constant_folded + report.layers[0].removed_zero == 50
    assert hasattr(model[1], "weight_mask")  # the input model is untouched


class Functional(nn.Module):
    """F.linear / F.conv2d on own parameters, torch.cat, a residual add, F.pad and slicing."""

    def __init__(self):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(6, 2, 3, 3))
        self.b1 = nn.Parameter(torch.randn(6))
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.mix = nn.Conv2d(10, 10, 1)
        self.w2 = nn.Parameter(torch.randn(5, 10 * 4 * 4))

    def forward(self, x):
        a = F.relu(F.conv2d(x, self.w1, self.b1, padding=1))
        b = F.relu(self.conv(x))
        both = torch.cat([a, b], dim=1)
        both = both + self.mix(both)
        wide = F.pad(both[:, 2:], (0, 0, 0, 0, 1, 1))  # drop 2 channels, pad 1 zero each side
        pooled = F.max_pool2d(wide, 2)
        return F.linear(torch.flatten(pooled, 1), self.w2)


def test_functional_calls_concat_pad_and_residual_add():
    torch.manual_seed(3)
    model = Functional().eval()
    with torch.no_grad():
        model.w1[1] = 0  # constant unit of the functional conv (bias only)
        model.w1[4] = 0
        model.b1[4] = 0  # zero unit
        model.conv.weight[:, 0] = 0
        model.mix.weight[3] = 0
        model.mix.bias[3] = 0
        model.w2[:, 16:32] = 0  # nobody reads wide channel 1 (both channel 3)
    _, report = check_exact_and_minimal(model, [2, 2, 8, 8])
    assert report.params_after < report.params_before


def test_a_hidden_layer_pruned_to_nothing_gives_a_constant_function():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.copy_(torch.tensor([0.5, -1.0, 2.0]))
    compacted, report = compact_with_report(model, torch.rand(2, 4))
    x = torch.randn(5, 4)
    assert torch.allclose(outputs(compacted, x), outputs(model, x), atol=1e-6)
    assert torch.allclose(outputs(compacted, x)[0], outputs(compacted, x)[1])
    first = report.layers[0]
    # unit 1 is relu(-1) = 0 and unit 2 relu(2): both folded into the next bias; the next layer
    # keeps one (constant, zero-weighted) input so that it still has an input
    assert first.removed_constant_folded == 2 and first.kept_constant == 1


def test_a_dense_model_is_returned_unchanged_and_reported_so():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).eval()
    compacted, report = compact_with_report(model, torch.rand(2, 4))
    assert not report.changed and report.params_after == report.params_before == 23
    assert torch.equal(compacted[0].weight if hasattr(compacted, "__getitem__") else
                       compacted.get_submodule("0").weight, model[0].weight)


def test_constants_before_a_padded_conv_are_kept_with_a_reason():
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Conv2d(3, 2, 3, padding=1)).eval()
    with torch.no_grad():
        model[0].weight[1] = 0
        model[0].bias[1] = 1.0  # channel 1 is the constant 1, seen through zero padding
    _, report = check_exact_and_minimal(model, [2, 1, 8, 8])
    assert report.layers[0].kept_constant == 1
    assert "zero padding" in report.layers[0].kept_reasons[0]


def test_constants_seen_through_padding_merge_into_one_channel():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1)).eval()
    with torch.no_grad():
        model[0].weight[1:] = 0
        model[0].bias.copy_(torch.tensor([0.0, 1.0, -2.0, 3.0]))  # constants 1 and 3 (relu)
    _compacted, report = check_exact_and_minimal(model, [2, 1, 8, 8])
    assert report.layers[0].shape_after[0] == 2  # the live unit and one constant unit
    assert report.layers[0].kept_constant == 1


class Residual(nn.Module):
    def __init__(self, channels: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel, padding=kernel // 2)
        self.head = nn.Linear(channels, 2)

    def forward(self, x):
        out = x + self.conv(x)
        return self.head(out.mean((2, 3)))


def test_a_cheap_dead_branch_unit_stays_as_a_zero_row():
    model = Residual(8, 1).eval()  # a zero row costs 8 weights, placing the branch 256 x 8
    with torch.no_grad():
        model.conv.weight[2] = 0
        model.conv.bias[2] = 0.5
    _, report = check_exact_and_minimal(model, [2, 8, 6, 6])
    assert not report.notes and report.params_after == report.params_before
    assert report.layers[0].kept_constant == 1  # channel 2: x + 0.5, the conv keeps a zero row
    assert "network input" in report.layers[0].kept_reasons[0]


def test_a_costly_dead_branch_unit_becomes_a_partial_add():
    model = Residual(3, 3).eval()  # a zero row costs 27 weights per position
    with torch.no_grad():
        model.conv.weight[2] = 0
        model.conv.bias[2] = 0.5
    example = torch.rand(2, 3, 6, 6)
    default = compact_with_report(model, example)[1]
    assert not default.notes  # 27 < 256 x 3: zero row by default
    compacted, report = compact_with_report(model, example, partial_add_cost=2)
    x = torch.randn(4, 3, 6, 6)
    assert relative_error(outputs(model, x), outputs(compacted, x)) <= 1e-5
    assert report.layers[0].shape_after == [2, 3, 3, 3]
    assert "partial add" in report.notes[0]
    assert any(n.target is torch.index_select for n in compacted.graph.nodes)


def test_unsupported_op_is_left_uncompacted_and_reported():
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Softmax(dim=1), nn.Linear(6, 2)).eval()
    with torch.no_grad():
        model[0].weight[2] = 0
    _, report = check_exact_and_minimal(model, [3, 4])
    assert any("Softmax" in n or "2" in n for n in report.notes)
    assert report.layers[0].shape_after == [6, 4]


def test_batchnorm_folding_is_exact():
    torch.manual_seed(0)
    model = models.build("resnet20").eval()
    random_masks(model, 5)
    x = torch.rand(2, 3, 32, 32)
    compacted, report = compact_with_report(model, x, fold_batchnorm=True)
    assert len(report.batchnorm_folded) == 19
    assert not any(isinstance(m, nn.BatchNorm2d) for m in compacted.modules())
    assert relative_error(outputs(model, x), outputs(compacted, x)) <= 1e-5


def test_compacted_models_export():
    torch.manual_seed(0)
    model = models.build("resnet20").eval()
    random_masks(model, 2)
    compacted = compact(model, torch.rand(1, 3, 32, 32))
    program = torch.export.export(compacted, (torch.rand(2, 3, 32, 32),))
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(program.module()(x), outputs(model, x), atol=1e-5)


def test_bad_inputs():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x):
            if x.sum() > 0:
                return self.fc(x)
            return x

    with pytest.raises(ReliefError, match="cannot capture Branchy"):
        compact(Branchy(), torch.rand(1, 2))
    with pytest.raises(ReliefError, match=r"shape \[1, 3\] do not fit"):
        compact(nn.Sequential(nn.Linear(2, 2)), torch.rand(1, 3))
    broken = nn.Sequential(nn.Linear(2, 2))
    with torch.no_grad():
        broken[0].weight[0, 0] = float("nan")
    with pytest.raises(ReliefError, match="NaN"):
        compact(broken, torch.rand(1, 2))
    with pytest.raises(ReliefError, match=r"takes 1 input\(s\) \(input\) but example_inputs "
                       "holds 2"):
        compact(nn.Sequential(nn.Linear(2, 2)), [torch.rand(1, 2), torch.rand(1, 2)])
    with pytest.raises(ReliefError, match=r"example_inputs\[1\] must be a float or integer"):
        compact(nn.Sequential(nn.Linear(2, 2)), [torch.rand(1, 2), "x"])
    with pytest.raises(ReliefError, match=r"example_inputs must be a float or integer tensor, "
                       "got torch.bool"):
        compact(nn.Sequential(nn.Linear(2, 2)), torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ReliefError, match="do not fit the model"):
        compact(nn.Sequential(nn.Linear(2, 2)), torch.ones(1, 2, dtype=torch.long))


def test_alignment_keeps_multiples_of_the_block_and_stays_exact():
    torch.manual_seed(0)
    model = models.build("vgg11").eval()
    random_masks(model, 3)
    x = torch.rand(2, 3, 32, 32)
    minimal = compact_with_report(model, x)[1]
    aligned_model, aligned = compact_with_report(model, x, align=8)
    for change in aligned.layers[:-1]:
        assert change.shape_after[0] % 8 == 0 or change.shape_after[0] == change.shape_before[0]
    assert minimal.params_after <= aligned.params_after < aligned.params_before
    assert relative_error(outputs(model, x), outputs(aligned_model, x)) <= 1e-5


class SplitChunk(nn.Module):
    """torch.split and Tensor.chunk along channels, each part to its own layer."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 8, 3)
        self.left = nn.Conv2d(3, 2, 1)
        self.right = nn.Conv2d(5, 2, 1)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        a, b = torch.split(F.relu(self.conv(x)), [3, 5], dim=1)
        c, d = (self.left(a) + self.right(b)).chunk(2, dim=1)
        return self.head(torch.cat([c, d], 1).mean((2, 3)).repeat(1, 2))


def test_split_and_chunk_along_channels():
    torch.manual_seed(0)
    model = SplitChunk().eval()
    with torch.no_grad():
        model.conv.weight[1] = 0  # part a loses a unit
        model.conv.bias[1] = 0
        model.conv.weight[6] = 0  # part b keeps a constant unit (folded)
        model.conv.bias[6] = 0.7
    _, report = check_exact_and_minimal(model, [2, 2, 6, 6])
    assert report.layers[0].shape_after[0] == 6
    assert not any("split" in note or "chunk" in note for note in report.notes)
