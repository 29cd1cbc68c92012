import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from relief_export.prune import relief_scores
from relief_export.prune.scores import ConvGeometry, choose_method, conv_slice_norms


def golden_linear() -> nn.Sequential:
    layer = nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]]))
        layer.bias.copy_(torch.tensor([0.5, -0.25]))
    return nn.Sequential(layer)


GOLDEN_INPUTS = torch.tensor([[1.0, 2.0, -4.0], [3.0, 0.0, 2.0]])  # mean |x| = [2, 1, 3]


def test_linear_contributions_by_hand():
    scores = relief_scores(golden_linear(), GOLDEN_INPUTS)
    assert torch.allclose(scores["0"], torch.tensor([[2.0, 2.0, 1.5, 0.5],
                                                     [0.0, 3.0, 3.0, 0.25]]))


def test_linear_without_bias_has_a_zero_bias_column():
    model = nn.Sequential(nn.Linear(3, 2, bias=False))
    scores = relief_scores(model, GOLDEN_INPUTS)["0"]
    assert scores.shape == (2, 4) and torch.count_nonzero(scores[:, -1]) == 0


def brute_force_conv(conv: nn.Conv2d, x: torch.Tensor, reference: bool) -> torch.Tensor:
    """Loop over filters, input channels (of the filter's group) and samples."""
    out, per_in = conv.weight.shape[:2]
    per_out = out // conv.groups
    samples = x.abs().mean(0, keepdim=True) if reference else x.abs()
    scores = torch.zeros(out, per_in + 1, dtype=torch.float64)
    positions = 0
    for j in range(out):
        for i in range(per_in):
            channel = (j // per_out) * per_in + i
            for sample in samples:
                y = F.conv2d(sample[channel].view(1, 1, *sample.shape[1:]),
                             conv.weight[j, i].abs().view(1, 1, *conv.kernel_size),
                             stride=conv.stride, padding=conv.padding, dilation=conv.dilation)
                scores[j, i] += y.double().norm() / len(samples)
                positions = y.numel()
    scores[:, -1] = conv.bias.detach().abs().double() * math.sqrt(positions)
    return scores


@pytest.mark.parametrize("conv_score", ["paper", "reference"])
@pytest.mark.parametrize("kwargs", [
    {"in_channels": 3, "out_channels": 4, "kernel_size": 3, "padding": 1},
    {"in_channels": 4, "out_channels": 6, "kernel_size": 3, "stride": 2, "groups": 2},
    {"in_channels": 4, "out_channels": 4, "kernel_size": 3, "dilation": 2, "padding": 2,
     "groups": 4},  # depthwise
    {"in_channels": 5, "out_channels": 3, "kernel_size": 1},
])
def test_conv_contributions_match_a_brute_force_loop(kwargs, conv_score):
    torch.manual_seed(2)
    conv = nn.Conv2d(**kwargs)
    x = torch.randn(5, kwargs["in_channels"], 7, 7)
    scores = relief_scores(nn.Sequential(conv), x, conv_score=conv_score)["0"]
    expected = brute_force_conv(conv, x, conv_score == "reference").float()
    assert torch.allclose(scores, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["direct", "gram"])
def test_both_conv_methods_agree_with_a_hand_computed_map(method):
    weight = torch.tensor([[[[1.0, -1.0], [0.0, 2.0]]]])
    x = torch.tensor([[[[1.0, 2.0, 0.0], [0.0, -1.0, 3.0], [1.0, 1.0, 1.0]]]])
    # |K| (*) |x| without padding: [[1+2+0+2, 2+0+0+6], [0+1+0+2, 1+3+0+2]] = [[5, 8], [3, 6]]
    norms = conv_slice_norms(weight, x, ConvGeometry((2, 2), (1, 1), (0, 0), (1, 1), 1), method)
    assert norms.item() == pytest.approx(math.sqrt(25 + 64 + 9 + 36))


def test_method_choice_prefers_gram_for_large_maps_and_direct_for_tiny_ones():
    assert choose_method((64, 64, 3, 3), positions=32 * 32) == "gram"
    assert choose_method((512, 512, 3, 3), positions=1) == "direct"


def test_scores_stream_over_batches():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    x = torch.randn(10, 2, 6, 6)
    whole = relief_scores(model, x)
    batched = relief_scores(model, [x[:3], x[3:7], (x[7:], torch.zeros(3))])
    for name in whole:
        assert torch.allclose(whole[name], batched[name], rtol=1e-5)


def test_inplace_activations_do_not_change_the_statistics():
    torch.manual_seed(4)

    def net(inplace: bool) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(inplace=inplace),
                             nn.Conv2d(4, 4, 3), nn.ReLU(inplace=inplace), nn.Flatten(),
                             nn.Linear(4 * 2 * 2, 3), nn.ReLU(inplace=inplace), nn.Linear(3, 2))

    plain, inplace = net(False), net(True)
    inplace.load_state_dict(plain.state_dict())
    x = torch.randn(6, 1, 6, 6)
    expected, got = relief_scores(plain, x), relief_scores(inplace, x)
    for name in expected:
        assert torch.equal(expected[name], got[name])


def test_transposed_slice_norms_by_hand_and_by_loop():
    """One input channel [[1, 2]] and a 2x2 kernel of ones, stride 2: the slice's map is
    [[1, 1, 2, 2], [1, 1, 2, 2]], norm sqrt(4 * 1 + 4 * 4) = sqrt(20). Then a random layer
    against a loop of single-channel conv_transpose2d calls, paper and reference scores."""
    from relief_export.prune.scores import TransposedGeometry, transposed_slice_norms

    layer = nn.ConvTranspose2d(1, 1, 2, stride=2, bias=False)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    x = torch.tensor([[[[1.0, 2.0]]]])
    got = transposed_slice_norms(layer.weight, x, TransposedGeometry.of(layer))
    assert got.shape == (1, 1) and math.isclose(float(got), math.sqrt(20.0), rel_tol=1e-6)

    torch.manual_seed(0)
    layer = nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1)
    x = torch.randn(5, 3, 6, 6)
    expected = torch.zeros(4, 3, dtype=torch.float64)
    for n in range(5):
        for i in range(3):
            for j in range(4):
                kernel = layer.weight[i:i + 1, j:j + 1].abs()
                maps = F.conv_transpose2d(x[n:n + 1, i:i + 1].abs(), kernel, stride=2,
                                          padding=1, output_padding=1)
                expected[j, i] += maps.norm().double()
    got = transposed_slice_norms(layer.weight, x, TransposedGeometry.of(layer))
    assert torch.allclose(got, expected, rtol=1e-5)
    scores = relief_scores(nn.Sequential(layer), x)["0"]
    positions = 12 * 12  # (6 - 1) * 2 - 2 + 2 + 1 + 1 = 12 per axis
    assert torch.allclose(scores[:, :3], (expected / 5).float(), rtol=1e-5)
    assert torch.allclose(scores[:, 3], layer.bias.abs().detach() * positions ** 0.5)
