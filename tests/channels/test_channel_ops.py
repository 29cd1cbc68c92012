"""One small graph per entry of the channel table: masked -> compacted -> ONNX.

Each case kills whole units by zeroing their weights (and biases), compacts, and checks
1. the structure: the layer shapes the channel rule implies (worked out by hand below),
2. the numbers: compacted vs masked on seeded inputs <= 1e-5 relative, and the exported ONNX
   file in onnxruntime and in onnx.reference vs the masked model <= 1e-4 relative.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
import torch.utils._pytree as pytree
from onnx.reference import ReferenceEvaluator
from torch import nn

import relief_export as rx
from relief_export.errors import VerificationError
from relief_export.runtime.ort import session


def kill(layer: nn.Module, units: list[int]) -> None:
    """Units stop depending on anything: weights (and biases) of ``units`` become 0."""
    with torch.no_grad():
        weight = layer.weight
        if isinstance(layer, (nn.ConvTranspose1d, nn.ConvTranspose2d)):
            weight[:, units] = 0
        else:
            weight[units] = 0
        if layer.bias is not None:
            layer.bias[units] = 0


class LinearOnTokens(nn.Module):
    """Linear on [batch, tokens, features]: fc1's units are the last axis."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 8), nn.Linear(8, 4)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Conv1dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.bn = nn.Conv1d(3, 8, 3, padding=1), nn.BatchNorm1d(8)
        self.c2, self.fc = nn.Conv1d(8, 4, 3), nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.c2(F.relu(self.bn(self.c1(x)))).mean(-1))


class TransposedConv(nn.Module):
    """A UNet-style up-sampling: ConvTranspose2d reads conv channels, a 1x1 conv reads it."""

    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(8, 6, 2, stride=2)
        self.head = nn.Conv2d(6 + 3, 2, 1)

    def forward(self, x):
        return self.head(torch.cat([F.relu(self.up(F.relu(self.down(x)))), x], 1))


class ChannelsLast(nn.Module):
    """Conv features moved last by permute, read by a Linear, moved back by transpose."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc, self.out = nn.Conv2d(3, 8, 1), nn.Linear(8, 6), nn.Conv2d(6, 2, 1)

    def forward(self, x):
        y = self.fc(F.relu(self.conv(x)).permute(0, 2, 3, 1))
        return self.out(y.transpose(1, 3).transpose(2, 3))


class SqueezeExcite(nn.Module):
    """x * sigmoid(fc(pool(x))): a per-channel gate computed from the data."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.squeeze, self.excite = nn.Linear(8, 4), nn.Linear(4, 8)
        self.out = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        y = F.relu(self.conv(x))
        gate = torch.sigmoid(self.excite(F.relu(self.squeeze(y.mean((2, 3))))))
        return self.out(y * gate[:, :, None, None])


class DenseBlock(nn.Module):
    """DenseNet: each layer's output is concatenated to its input along channels."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(7, 4, 3, padding=1)
        self.head = nn.Conv2d(11, 2, 1)

    def forward(self, x):
        x = torch.cat([x, F.relu(self.a(x))], 1)
        x = torch.cat([x, F.relu(self.b(x))], 1)
        return self.head(x)


class DeadBranch(nn.Module):
    """A branch pruned to nothing before a cat is removed with its part."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(torch.cat([F.relu(self.a(x)), F.relu(self.b(x))], 1))


class SplitHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.left, self.right = nn.Conv2d(4, 2, 1), nn.Conv2d(4, 2, 1)

    def forward(self, x):
        a, b = torch.chunk(F.relu(self.conv(x)), 2, dim=1)
        return self.left(a) + self.right(b)


class OptionAShortcut(nn.Module):
    """The CIFAR ResNet shortcut: strided spatial slice, then zero channels padded on."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.conv = nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        x = F.relu(self.stem(x))
        shortcut = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 2, 2))
        return self.head(F.relu(self.conv(x) + shortcut).mean((2, 3)))


class FeaturePad(nn.Module):
    """F.pad on the last axis of [batch, tokens, features] adds feature columns."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 8), nn.Linear(10, 3)

    def forward(self, x):
        return self.fc2(F.pad(F.relu(self.fc1(x)), (1, 1)))


class TransformerMlp(nn.Module):
    """LayerNorm over the features keeps them; the MLP's hidden units still go."""

    def __init__(self):
        super().__init__()
        self.norm, self.fc1, self.fc2 = nn.LayerNorm(8), nn.Linear(8, 16), nn.Linear(16, 8)

    def forward(self, x):
        return x + self.fc2(F.gelu(self.fc1(self.norm(x))))


class GroupNormNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.norm = nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(2, 8)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(F.relu(self.norm(self.conv(x))))


class TokenPooling(nn.Module):
    """mean over tokens and the first token (x[:, 0]) both keep the feature axis."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(6, 8), nn.Linear(8, 3), nn.Linear(8, 3)

    def forward(self, x):
        y = F.relu(self.fc1(x))
        return self.fc2(y.mean(1)) + self.fc3(y[:, 0])


class FunctionalLinear(nn.Module):
    """F.linear on the model's own parameters."""

    def __init__(self):
        super().__init__()
        self.w1, self.b1 = nn.Parameter(torch.randn(8, 5)), nn.Parameter(torch.randn(8))
        self.w2 = nn.Parameter(torch.randn(3, 8))

    def forward(self, x):
        return F.linear(F.relu(F.linear(x, self.w1, self.b1)), self.w2)


class ViewKeepsChannels(nn.Module):
    """view(B, C, H * W) and unsqueeze / squeeze keep the channel axis where it is."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 8, 1), nn.Linear(8, 2)

    def forward(self, x):
        y = F.relu(self.conv(x))
        pooled = y.view(y.size(0), 8, -1).mean(-1).unsqueeze(1).squeeze(1)
        return self.fc(pooled)


class TupleAndDict(nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk, self.a, self.b = nn.Linear(6, 8), nn.Linear(8, 2), nn.Linear(8, 3)

    def forward(self, x):
        h = F.relu(self.trunk(x))
        return self.a(h), {"b": self.b(h)}


class TwoInputsWithTokenIds(nn.Module):
    """Integer token ids through an embedding (left whole) and a float input."""

    def __init__(self):
        super().__init__()
        self.embed, self.fc1 = nn.Embedding(20, 6), nn.Linear(6, 8)
        self.side, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, ids, extra):
        h = F.relu(self.fc1(self.embed(ids)).mean(1) + self.side(extra))
        return self.fc2(h)


class Attention(nn.Module):
    """Multi-head self-attention through F.scaled_dot_product_attention: 4 heads of 4."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(16, 16) for _ in range(4))

    def forward(self, x):
        batch, tokens, _ = x.shape

        def heads(t):
            return t.view(batch, tokens, 4, 4).transpose(1, 2)

        context = F.scaled_dot_product_attention(heads(self.q(x)), heads(self.k(x)),
                                                 heads(self.v(x)))
        return self.o(context.transpose(1, 2).reshape(batch, tokens, 16))


class HandWrittenAttention(Attention):
    """The same heads written out: softmax(q @ k^T / sqrt(d)) @ v (``scores`` other than
    softmax: relu, whose rows do not sum to 1)."""

    def __init__(self, scores=F.softmax):
        super().__init__()
        self.scores = scores

    def forward(self, x):
        batch, tokens, _ = x.shape

        def heads(t):
            return t.view(batch, tokens, 4, 4).transpose(1, 2)

        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
        weights = self.scores(torch.matmul(q, k.transpose(-2, -1)) / 2.0, dim=-1)
        return self.o((weights @ v).transpose(1, 2).reshape(batch, tokens, 16))


def relu_scores(x, dim):
    return F.relu(x)


def constant_head_values(model: Attention) -> None:
    """Head 1's values are the constant 0.3 (rows 4-7 of v zero, bias 0.3): its output is that
    constant whatever the attention weights, so o folds it and the head goes; head 3's output
    columns of o are zero: nothing reads it, so it goes too."""
    with torch.no_grad():
        model.v.weight[4:8] = 0
        model.v.bias[4:8] = 0.3
        model.o.weight[:, 12:16] = 0


class SteppedChannels(nn.Module):
    """Every second channel (x[:, ::2]) feeds one head, the others another."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.even, self.odd = nn.Conv2d(4, 2, 1), nn.Conv2d(4, 2, 1)

    def forward(self, x):
        y = F.relu(self.conv(x))
        return self.even(y[:, ::2]) + self.odd(y[:, 1::2])


class ActivationsPoolingExpand(nn.Module):
    """ReLU6, Hardswish, SiLU, Tanh, max pooling, and a gate broadcast by expand_as."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8, 8), \
            nn.Conv2d(8, 2, 1)

    def forward(self, x):
        y = F.max_pool2d(F.hardswish(F.relu6(self.conv(x))), 2)
        gate = torch.tanh(F.silu(self.fc(y.mean((2, 3))))).view(-1, 8, 1, 1)
        return self.head(y * gate.expand_as(y))


class Flipped(nn.Module):
    """torch.flip over height and width, and the flip method over width: channels stay."""

    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 2, 3)

    def forward(self, x):
        return self.head(torch.flip(F.relu(self.conv(x)), [2, 3]).flip(-1))


class FlippedChannels(nn.Module):
    """A flip of the channel axis reverses the channels: not modelled, kept whole."""

    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(torch.flip(F.relu(self.conv(x)), [1]))


class Unsupported(nn.Module):
    """F.interpolate is not in the table: its neighbourhood stays whole, exactly."""

    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(F.interpolate(F.relu(self.conv(x)), scale_factor=2.0))


@dataclass(frozen=True)
class Case:
    build: Callable[[], nn.Module]
    inputs: Callable[[torch.Generator], tuple[torch.Tensor, ...]]
    dead: Callable[[nn.Module], None]
    shapes: dict[str, list[int]]  # layer -> weight shape after compaction ([] = removed)


def image(*shape):
    return lambda g: (torch.randn(2, *shape, generator=g),)


CASES = {
    # fc1 loses units 0-3; gelu(0) = 0, so fc2's columns 0-3 go
    "linear_on_tokens": Case(LinearOnTokens, image(5, 16), lambda m: kill(m.fc1, [0, 1, 2, 3]),
                             {"fc1": [4, 16], "fc2": [4, 4]}),
    # c1 loses 0-2; BatchNorm shifts them to constants that c2 folds into its bias
    "conv1d_batchnorm": Case(Conv1dNet, image(3, 12), lambda m: kill(m.c1, [0, 1, 2]),
                             {"c1": [5, 3, 3], "c2": [4, 5, 3]}),
    # down loses 0-3 -> up keeps 4 input channels; up loses outputs 0-1 -> head's columns
    "conv_transpose": Case(TransposedConv, image(3, 8, 8),
                           lambda m: (kill(m.down, [0, 1, 2, 3]), kill(m.up, [0, 1])),
                           {"down": [4, 3, 3, 3], "up": [4, 4, 2, 2], "head": [2, 7, 1, 1]}),
    "permute_transpose": Case(ChannelsLast, image(3, 4, 4),
                              lambda m: (kill(m.conv, [0, 1, 2]), kill(m.fc, [5])),
                              {"conv": [5, 3, 1, 1], "fc": [5, 5], "out": [2, 5, 1, 1]}),
    # conv units 0-2 dead: y's channels 0-2 are 0, so the gate's rows 0-2 go as well
    "squeeze_excite": Case(SqueezeExcite, image(3, 6, 6), lambda m: kill(m.conv, [0, 1, 2]),
                           {"conv": [5, 3, 3, 3], "squeeze": [4, 5], "excite": [5, 4],
                            "out": [2, 5, 1, 1]}),
    "dense_concat": Case(DenseBlock, image(3, 6, 6), lambda m: (kill(m.a, [1]), kill(m.b, [0, 3])),
                         {"a": [3, 3, 3, 3], "b": [2, 6, 3, 3], "head": [2, 8, 1, 1]}),
    "dead_branch_before_cat": Case(DeadBranch, image(3, 6, 6), lambda m: kill(m.b, [0, 1, 2, 3]),
                                   {"a": [4, 3, 3, 3], "b": [], "head": [2, 4, 1, 1]}),
    "split_chunk": Case(SplitHeads, image(3, 4, 4), lambda m: kill(m.conv, [0, 5, 6]),
                        {"conv": [5, 3, 1, 1], "left": [2, 3, 1, 1], "right": [2, 2, 1, 1]}),
    # stem unit 1 lands in channel 2 + 1 = 3 of the padded shortcut, added to conv unit 3:
    # with both dead the channel is 0 everywhere and goes from stem, conv, the pad and head
    "strided_slice_and_channel_pad": Case(
        OptionAShortcut, image(3, 8, 8), lambda m: (kill(m.stem, [1]), kill(m.conv, [3])),
        {"stem": [3, 3, 3, 3], "conv": [7, 3, 3, 3], "head": [2, 7]}),
    # the two padded (zero) features go too: fc2 reads fc1's 6 live units only
    "pad_features": Case(FeaturePad, image(4, 6), lambda m: kill(m.fc1, [2, 3]),
                         {"fc1": [6, 6], "fc2": [3, 6]}),
    "layer_norm_keeps_features": Case(TransformerMlp, image(4, 8),
                                      lambda m: kill(m.fc1, list(range(10))),
                                      {"fc1": [6, 8], "fc2": [8, 6]}),
    "group_norm_keeps_channels": Case(GroupNormNet, image(3, 4, 4), lambda m: kill(m.conv, [0]),
                                      {"conv": [8, 3, 3, 3], "head": [2, 8, 1, 1]}),
    "mean_and_select_tokens": Case(TokenPooling, image(5, 6), lambda m: kill(m.fc1, [0, 7]),
                                   {"fc1": [6, 6], "fc2": [3, 6], "fc3": [3, 6]}),
    "functional_linear": Case(FunctionalLinear, image(5), lambda m: kill_rows(m.w1, m.b1, [1, 2]),
                              {}),
    "view_unsqueeze_squeeze": Case(ViewKeepsChannels, image(3, 4, 4),
                                   lambda m: kill(m.conv, [2, 3]),
                                   {"conv": [6, 3, 1, 1], "fc": [2, 6]}),
    "tuple_and_dict_outputs": Case(TupleAndDict, image(6), lambda m: kill(m.trunk, [0, 1, 2]),
                                   {"trunk": [5, 6], "a": [2, 5], "b": [3, 5]}),
    "token_ids_and_float_inputs": Case(
        TwoInputsWithTokenIds,
        lambda g: (torch.randint(0, 20, (2, 7), generator=g), torch.randn(2, 4, generator=g)),
        lambda m: (kill(m.fc1, [0, 1]), kill(m.side, [0, 1])),
        {"fc1": [6, 6], "side": [6, 4], "fc2": [2, 6]}),
    # heads 1 and 3 go whole: q, k and v lose 8 rows, o 8 columns
    "attention_heads": Case(Attention, image(5, 16), constant_head_values,
                            {"q": [8, 16], "k": [8, 16], "v": [8, 16], "o": [16, 8]}),
    # the same, written out as softmax(q @ k^T / 2) @ v
    "hand_written_attention_heads": Case(HandWrittenAttention, image(5, 16),
                                         constant_head_values,
                                         {"q": [8, 16], "k": [8, 16], "v": [8, 16],
                                          "o": [16, 8]}),
    # relu weights do not sum to 1: head 1's constant values vary, so only head 3 goes
    "attention_weights_not_softmax": Case(lambda: HandWrittenAttention(relu_scores),
                                          image(5, 16), constant_head_values,
                                          {"q": [12, 16], "k": [12, 16], "v": [12, 16],
                                           "o": [16, 12]}),
    # conv units 2 (even, position 1) and 5 (odd, position 2) go; x[:, ::2] picks the rest
    "stepped_channel_slices": Case(SteppedChannels, image(3, 4, 4), lambda m: kill(m.conv, [2, 5]),
                                   {"conv": [6, 3, 1, 1], "even": [2, 3, 1, 1],
                                    "odd": [2, 3, 1, 1]}),
    # conv unit 0: relu6(0) = 0 -> hardswish(0) = 0 -> pooled 0; fc row 0 is then unread
    # through the gate (0 * gate = 0): both go
    "activations_pooling_expand": Case(ActivationsPoolingExpand, image(3, 6, 6),
                                       lambda m: kill(m.conv, [0]),
                                       {"conv": [7, 3, 3, 3], "fc": [7, 7], "head": [2, 7, 1, 1]}),
    # conv loses 0-2: relu(0) = 0 stays 0 under a spatial flip, so head's columns 0-2 go
    "flip_positions": Case(Flipped, image(3, 6, 6), lambda m: kill(m.conv, [0, 1, 2]),
                           {"conv": [5, 3, 3, 3], "head": [2, 5, 3, 3]}),
    # a flip over channels is outside the flip rule: both layers keep all 8 channels
    "flip_channels_left_whole": Case(FlippedChannels, image(3, 4, 4),
                                     lambda m: kill(m.conv, [0, 1]),
                                     {"conv": [8, 3, 1, 1], "head": [2, 8, 1, 1]}),
    "unsupported_op_left_whole": Case(Unsupported, image(3, 4, 4), lambda m: kill(m.conv, [0]),
                                      {"conv": [8, 3, 1, 1], "head": [2, 8, 1, 1]}),
}


def kill_rows(weight: torch.Tensor, bias: torch.Tensor, rows: list[int]) -> None:
    with torch.no_grad():
        weight[rows] = 0
        bias[rows] = 0


def relative(expected, got) -> float:
    worst = 0.0
    for a, b in zip(pytree.tree_leaves(expected), pytree.tree_leaves(got), strict=True):
        a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
        assert a.shape == b.shape
        worst = max(worst, float((a - b).abs().max() / a.abs().max().clamp_min(1e-12)))
    return worst


def masked_case(name: str):
    case = CASES[name]
    torch.manual_seed(0)
    model = case.build().eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                module.running_mean.uniform_(-1, 1)
                module.bias.uniform_(-1, 1)
    case.dead(model)
    return case, model


@pytest.mark.parametrize("name", sorted(CASES))
def test_compaction_structure_and_numbers(name):
    case, model = masked_case(name)
    generator = torch.Generator().manual_seed(1)
    example = case.inputs(generator)
    compacted, report = rx.compact_with_report(model, example, align=1)
    shapes = {change.name: change.shape_after for change in report.layers}
    for layer, shape in case.shapes.items():
        if shape:
            assert shapes[layer] == shape, (layer, shapes)
        else:
            assert not hasattr(compacted, layer), "an emptied layer must be gone"
    before = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in compacted.parameters()) <= before
    with torch.no_grad():
        for _ in range(3):
            x = case.inputs(generator)
            assert relative(model(*x), compacted(*x)) <= 1e-5


@pytest.mark.parametrize("name", sorted(CASES))
def test_onnx_in_onnxruntime_and_reference(name, tmp_path):
    case, model = masked_case(name)
    generator = torch.Generator().manual_seed(2)
    example = case.inputs(generator)
    out = tmp_path / "model.onnx"
    rx.export_onnx(model, out, example_inputs=example, align=1)
    proto = onnx.load(out)
    names = [value.name for value in proto.graph.input]
    x = case.inputs(generator)
    feeds = {n: t.numpy() for n, t in zip(names, x, strict=True)}
    with torch.no_grad():
        expected = model(*x)
    runtime = session(out.read_bytes()).run(None, feeds)
    reference = ReferenceEvaluator(proto).run(None, feeds)
    assert relative(expected, [torch.from_numpy(np.asarray(a)) for a in runtime]) <= 1e-4
    assert relative(expected, [torch.from_numpy(np.asarray(a)) for a in reference]) <= 1e-4


def test_unsupported_ops_are_named_with_the_reason():
    _, model = masked_case("unsupported_op_left_whole")
    _, report = rx.compact_with_report(model, torch.randn(2, 3, 4, 4))
    assert any("interpolate" in note and "not in the channel table" in note
               for note in report.notes), report.notes
    assert report.to_dict()["left_whole"] == [{"node": "interpolate",
                                               "op": "call_function interpolate",
                                               "why": "operation not in the channel table"}]
    _, model = masked_case("layer_norm_keeps_features")
    _, report = rx.compact_with_report(model, torch.randn(2, 4, 8))
    assert any(note.startswith("kept whole: 8 channels normalised together by norm (LayerNorm")
               for note in report.notes), report.notes


def test_onnx_names_inputs_after_the_forward_and_flattens_outputs(tmp_path):
    _, model = masked_case("token_ids_and_float_inputs")
    example = (torch.randint(0, 20, (2, 7)), torch.randn(2, 4))
    rx.export_onnx(model, tmp_path / "m.onnx", example_inputs=example)
    proto = onnx.load(tmp_path / "m.onnx")
    assert [v.name for v in proto.graph.input] == ["ids", "extra"]
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    _, model = masked_case("tuple_and_dict_outputs")
    rx.export_onnx(model, tmp_path / "t.onnx", example_inputs=torch.randn(2, 6))
    assert [v.name for v in onnx.load(tmp_path / "t.onnx").graph.output] == \
        ["output_0", "output_1"]


def test_a_compaction_that_changes_the_function_is_an_error(monkeypatch):
    compact_module = importlib.import_module("relief_export.compile.compact")
    real = compact_module.rewrite

    def corrupting(slots, decision):
        result = real(slots, decision)
        with torch.no_grad():
            next(slots.graph_module.parameters()).mul_(1.5)
        return result

    monkeypatch.setattr(compact_module, "rewrite", corrupting)
    _, model = masked_case("linear_on_tokens")
    with pytest.raises(VerificationError, match="compaction changed the function") as caught:
        rx.compact(model, torch.randn(2, 5, 16))
    assert caught.value.exit_code == 1
    table = str(caught.value).splitlines()
    assert table[1].split() == ["inputs", "output", "max", "|error|", "max", "|output|",
                                "relative"]
    assert sum("output 0" in line for line in table) == 3  # examples, N(0,1), U(0,1)


def test_grouped_and_depth_multiplier_convolutions_lose_whole_groups():
    """groups=4 with 2 filters per input channel (a depth multiplier): when both filters of
    group 1 are dead and unread, the group goes with its input channel; one dead filter alone
    in a group stays (a group keeps its size)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 8, 3, padding=1, groups=4),
                          nn.ReLU(), nn.Conv2d(8, 2, 1)).eval()
    kill(model[0], [1])  # input channel 1 of the grouped conv is 0 ...
    kill(model[2], [2, 3, 6])  # ... its group's filters 2, 3 are dead; 6 shares group 3
    x = torch.randn(2, 3, 5, 5)
    small, report = rx.compact_with_report(model, x, align=1)
    shapes = {change.name: change.shape_after for change in report.layers}
    assert shapes == {"0": [3, 3, 1, 1], "2": [6, 1, 3, 3], "4": [2, 6, 1, 1]}
    assert small.get_submodule("2").groups == 3
    with torch.no_grad():
        y = torch.randn(4, 3, 5, 5)
        assert relative(model(y), small(y)) <= 1e-5
