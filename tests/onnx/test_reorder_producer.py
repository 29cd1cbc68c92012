"""A dense layer's units reordered for the covered layer that alone reads them: that layer's
blocks then read ranges (one Split) instead of gathering channels."""

import numpy as np
import torch
from torch import nn

from relief_export.onnx.emit import to_onnx
from relief_export.onnx.passes import SparseCompute
from relief_export.onnx.sparse.cover import (
    Block,
    Cover,
    gathers,
    grouping_order,
    in_channel_order,
)

from .test_sparse_compute import relative, run_both


def test_the_grouping_order_by_hand():
    """Blocks reading (2, 0) and (1, 3) of 5 channels: channels 2, 0, then 1, 3, then the
    unread 4; blocks of ranges do not gather, nor does one block."""
    cover = Cover((Block((0,), (0, 2)), Block((1,), (1, 3))), (2, 5))
    assert grouping_order(cover) == (0, 2, 1, 3, 4)
    assert gathers(cover)
    assert not gathers(Cover((Block((0,), (0, 1)), Block((1,), (2, 3))), (2, 5)))
    assert not gathers(Cover((Block((0, 1), (0, 3)),), (2, 5)))


def test_a_cover_in_its_grouping_order_reads_ranges():
    """Under (0, 2, 1, 3, 4), old channels 0, 2 are new 0, 1 and old 1, 3 new 2, 3."""
    cover = Cover((Block((0,), (0, 2)), Block((1,), (1, 3))), (2, 5))
    moved = in_channel_order(cover, grouping_order(cover))
    assert moved.blocks == (Block((0,), (0, 1)), Block((1,), (2, 3))) and not gathers(moved)


class DenseThenGrouped(nn.Module):
    """c1 (3 -> 16, dense: too few inputs to group) -> ReLU -> max pool -> c2 (16 -> 12) in 2
    hidden groups of interleaved channels (even / odd); ``twice``: c1's output is also
    added to the result's mean (a second reader, so its order is not free)."""

    def __init__(self, twice: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.c1, self.c2 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 12, 3, padding=1)
        self.twice = twice
        keep = torch.zeros(12, 16, dtype=torch.bool)
        keep[:6, 0::2] = True
        keep[6:, 1::2] = True
        with torch.no_grad():
            self.c2.weight.mul_(keep[:, :, None, None])

    def forward(self, x):
        y = torch.max_pool2d(torch.relu(self.c1(x)), 2)
        out = self.c2(y)
        return out + y.mean() if self.twice else out


def test_a_dense_producer_is_reordered_so_the_blocks_read_ranges():
    """c2's blocks read the even and the odd channels: c1's units are reordered (evens
    first), so c2's blocks read two ranges through one Split, no Gather; the graph computes
    the model's function (onnxruntime and onnx.reference)."""
    model = DenseThenGrouped().eval()
    x = torch.randn(2, 3, 8, 8)
    exported = to_onnx(model, x)
    compute = SparseCompute(force="cover")
    compute(exported)
    assert compute.choices[1].blocks == 2
    ops = [n.op_type for n in exported.graph]
    assert "Split" in ops and "Gather" not in ops
    with torch.no_grad():
        expected = model(x).numpy()
    runtime, reference = run_both(exported, x.numpy())
    assert relative(expected, runtime) <= 1e-5 and relative(expected, reference) <= 1e-5


def test_a_producer_read_elsewhere_keeps_its_order():
    """With c1's output read twice, its units keep their order and c2's blocks gather; the
    function is unchanged."""
    model = DenseThenGrouped(twice=True).eval()
    x = torch.randn(2, 3, 8, 8)
    exported = to_onnx(model, x)
    weight_before = np.array(next(n for n in exported.graph if n.op_type == "Conv")
                             .inputs[1].const_value.numpy())
    compute = SparseCompute(force="cover")
    compute(exported)
    first = next(n for n in exported.graph if n.op_type == "Conv")
    assert np.array_equal(first.inputs[1].const_value.numpy(), weight_before)
    assert "Gather" in [n.op_type for n in exported.graph]
    with torch.no_grad():
        expected = model(x).numpy()
    runtime, reference = run_both(exported, x.numpy())
    assert relative(expected, runtime) <= 1e-5 and relative(expected, reference) <= 1e-5


class ConvFlattenedIntoGroups(nn.Module):
    """c (1 -> 4 channels, 3 x 3) -> ReLU -> flatten (4 x 16 features) -> fc (64 -> 6) in 2
    hidden groups of interleaved features: the fc's columns are features, not c's units."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.c, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(64, 6)
        keep = torch.zeros(6, 64, dtype=torch.bool)
        keep[:3, 0::2] = True
        keep[3:, 1::2] = True
        with torch.no_grad():
            self.fc.weight.mul_(keep)

    def forward(self, x):
        return self.fc(torch.relu(self.c(x)).flatten(1))


def test_a_producer_behind_a_flatten_keeps_its_order():
    """The fc's blocks gather features; c is not reordered (its 4 units are not the fc's
    64 columns), and the covered graph computes the model's function."""
    model = ConvFlattenedIntoGroups().eval()
    x = torch.randn(2, 1, 4, 4)
    exported = to_onnx(model, x)
    compute = SparseCompute(force="cover")
    compute(exported)
    assert compute.choices[-1].blocks == 2
    with torch.no_grad():
        expected = model(x).numpy()
    runtime, reference = run_both(exported, x.numpy())
    assert relative(expected, runtime) <= 1e-5 and relative(expected, reference) <= 1e-5
