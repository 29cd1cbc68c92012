"""Reading less of a layer's input: the box of a flattened input it alone reads (crop), a
block's channels as one range (ranged covers), adjacent ranges as one Split; and the rule that
keeps a cover (faster somewhere, slower nowhere), per layer and for the whole model."""

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import torch
from torch import nn

import relief_export as rx
from relief_export.onnx.emit import to_onnx
from relief_export.onnx.passes import SparseCompute
from relief_export.onnx.passes.sparse_compute import _candidates, _worth_timing
from relief_export.onnx.sparse import timing as timing_module
from relief_export.onnx.sparse.build import Writer
from relief_export.onnx.sparse.cover import Block, Cover, ranged
from relief_export.onnx.sparse.crop import read_box
from relief_export.onnx.sparse.timing import (
    IN_CONTEXT,
    Setting,
    in_context,
    saved_in_context,
    single_layer_model,
)
from relief_export.pipeline import sparse_stage
from relief_export.runtime.ort import session

from .test_sparse_compute import Chain, constant_of, masked, relative, run_both


def image_mlp() -> nn.Module:
    """Flatten [1, 6, 6] -> Linear(36, 5) -> ReLU -> Linear(5, 3); the first layer reads
    pixels only in rows 1..4, columns 2..4 (some of those not either)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
    read = torch.zeros(6, 6, dtype=torch.bool)
    read[1:5, 2:5] = True
    read[2, 3] = False
    with torch.no_grad():
        model[1].weight[:, ~read.reshape(-1)] = 0
    return model


def test_a_flattened_input_is_cropped_to_the_box_read():
    """Box rows 1:5, columns 2:5 of the 6 x 6 image: 12 of 36 inputs; one Slice of the
    4-d input on axes 1..3, the layer's weight cut to the box's 12 columns; same function."""
    model = image_mlp()
    x = torch.randn(4, 1, 6, 6)
    exported = to_onnx(model, x)
    compute = SparseCompute(force="cover")
    compute(exported)
    first = compute.choices[0]
    assert first.crop == "12 of 36 inputs: [0:1, 1:5, 2:5] of [1, 6, 6]"
    assert (first.macs_compacted, first.macs_cropped, first.shape) == (5 * 36, 5 * 12, [5, 12])
    assert first.weight == "1.weight"  # the module's parameter, as before the crop
    [box] = [n for n in exported.graph if n.op_type == "Slice"]
    assert [list(constant_of(v)) for v in box.inputs[1:4]] == [[0, 1, 2], [1, 5, 5], [1, 2, 3]]
    assert box.inputs[0] is exported.graph.inputs[0]
    with torch.no_grad():
        expected = model(x).numpy()
    runtime, reference = run_both(exported, x.numpy())
    assert relative(expected, runtime) <= 1e-5 and relative(expected, reference) <= 1e-5
    read = {v.name for n in exported.graph for v in n.inputs if v is not None}
    assert set(exported.graph.initializers) <= read  # the uncropped weight is gone


def test_read_box_by_hand():
    """Grid [2, 3, 3]: reads at (1, 1, 1), (1, 1, 2), (1, 2, 1) give the box [1:2, 1:3, 1:3],
    4 of 18; nothing read, or a box of more than 90% of the grid, is no crop."""
    read = np.zeros((2, 3, 3), dtype=bool)
    read[1, 1, 1] = read[1, 1, 2] = read[1, 2, 1] = True
    crop = read_box(read.reshape(-1), [2, 3, 3])
    assert crop is not None and (crop.starts, crop.ends) == ((1, 1, 1), (2, 3, 3))
    assert list(crop.columns) == [13, 14, 16, 17]
    assert read_box(np.zeros(18, dtype=bool), [2, 3, 3]) is None
    corners = np.zeros((2, 3, 3), dtype=bool)
    corners[0, 0, 0] = corners[1, 2, 2] = True
    assert read_box(corners.reshape(-1), [2, 3, 3]) is None


def test_ranged_cover_by_hand():
    """Block (0, 1) x (0, 2, 5) reads 0..5 ranged (2 x 6 MACs), (2,) x (3, 4) stays: 14
    MACs instead of 8; a cover of ranges already has no ranged form."""
    cover = Cover((Block((0, 1), (0, 2, 5)), Block((2,), (3, 4))), (3, 6))
    wide = ranged(cover)
    assert wide is not None and [b.cols for b in wide.blocks] == [tuple(range(6)), (3, 4)]
    assert (cover.macs, wide.macs) == (8, 14)
    assert ranged(wide) is None


def test_only_candidates_the_cost_model_puts_below_dense_are_timed():
    """8 x 8, two blocks of 4 units: (0, 7) and (1, 2), 16 MACs of 64 (cost 0.25 + 2 x 0.02).
    Ranged, the first reads 0..7: 32 + 8 = 40 MACs, cost 0.625 + 0.04, timed; one block of
    (0, 1, 2, 7) ranged reads everything (cost 1.02), not timed. Four blocks of two units reading
    (0, 7): 16 MACs gathered, ranged 4 x 2 x 8 = 64 (cost 1.08), not timed, nor
    their merges ranged."""
    finest = Cover((Block((0, 1, 2, 3), (0, 7)), Block((4, 5, 6, 7), (1, 2))), (8, 8))
    whole = Cover((Block(tuple(range(8)), (0, 1, 2, 7)),), (8, 8))
    labels = [label for label, _ in _worth_timing(_candidates(finest, whole))]
    assert labels == ["2 blocks", "1 block", "2 blocks (ranges)"]  # one block 0..7: 64 MACs
    wide = Cover(tuple(Block((2 * g, 2 * g + 1), (0, 7)) for g in range(4)), (8, 8))
    ranged_wide = ranged(wide)
    assert ranged_wide is not None and ranged_wide.macs == 64
    assert [label for label, _ in _worth_timing(_candidates(wide, whole))] == \
        ["4 blocks", "2 blocks", "1 block"]
    assert not _worth_timing([("4 blocks (ranges)", ranged_wide)])


def test_blocks_reading_ranges_that_do_not_overlap_share_one_split():
    """Units 0-2 read inputs 0-3, units 3-5 inputs 6-11 (4-5 read by none): one Split into
    [4, 2, 6] feeds the two blocks, no Slice or Gather; same function."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 2)).eval()
    with torch.no_grad():
        model[0].weight[:3, 4:] = 0
        model[0].weight[3:, :6] = 0
    x = torch.randn(5, 12)
    exported = to_onnx(model, x)
    compute = SparseCompute(force="cover")
    compute(exported)
    assert (compute.choices[0].blocks, compute.choices[0].macs_cover) == (2, 3 * 4 + 3 * 6)
    ops = [n.op_type for n in exported.graph]
    assert ops.count("Split") == 1 and "Slice" not in ops and "Gather" not in ops
    [split] = [n for n in exported.graph if n.op_type == "Split"]
    assert list(constant_of(split.inputs[1])) == [4, 2, 6]
    with torch.no_grad():
        expected = model(x).numpy()
    runtime, reference = run_both(exported, x.numpy())
    assert relative(expected, runtime) <= 1e-5 and relative(expected, reference) <= 1e-5


@pytest.mark.parametrize(("batch1_ms", "chosen"), [(10.0, "cover"), (10.5, "dense")])
def test_a_cover_must_gain_somewhere_and_lose_nowhere(monkeypatch, batch1_ms, chosen):
    """Faked: dense 10 ms at batch 1 and 64; every cover 5 ms at batch 64 and ``batch1_ms``
    at batch 1; in context (between two 1x1 Convs) each takes 2 ms more. A tie at batch 1
    keeps the cover (faster at batch 64); 5% slower does not."""

    def times(self, candidates, shape, dtype=None):
        dense = {s: 10.0 for s in self.settings}
        cover = {Setting(1, 1): batch1_ms, Setting(64, 1): 5.0}
        if not candidates[0][0].startswith("fp32|Conv"):  # the Linear layers: alone
            return [dense] + [cover] * (len(candidates) - 1)
        assert not candidates[0][0].endswith(IN_CONTEXT)
        assert all(key.endswith(IN_CONTEXT) for key, _ in candidates[1:])
        return [dense] + [{s: ms + 2.0 for s, ms in t.items()}
                          for t in [dense] + [cover] * (len(candidates) - 2)]

    monkeypatch.setattr(timing_module.Timer, "times", times)
    exported = to_onnx(masked(Chain()), torch.randn(2, 16, 4, 4))
    compute = SparseCompute((Setting(1, 1), Setting(64, 1)))
    compute(exported)
    second = compute.choices[1]
    assert second.chosen == chosen
    if chosen == "cover":
        assert "faster than dense at batch 64, 1 thread(s), not slower" in second.why
        assert second.ms_cover == {"batch 1, 1 thread(s)": batch1_ms,
                                   "batch 64, 1 thread(s)": 5.0}
    else:
        assert second.why.startswith("no cover measured faster (fp32)")


def test_a_conv_candidate_in_context_is_conv_layer_conv():
    """in_context wraps the layer between a 1x1 Conv of its input's channels and one of its
    output's: the candidate computes W1 * (layer(W0 * x)), checked in torch."""
    weight = np.random.default_rng(1).standard_normal((6, 4, 3, 3)).astype(np.float32)

    def layer(graph, x):
        return Writer(graph, None, "dense").layer("Conv", x, weight, None, {"pads": [1] * 4},
                                                  None, "layer")

    model = single_layer_model(in_context(layer, 4, 6), [1, 4, 5, 5], 18)
    convs = [n for n in model.graph]
    assert [n.op_type for n in convs] == ["Conv"] * 3
    before, after = (constant_of(n.inputs[1]) for n in (convs[0], convs[2]))
    assert before.shape == (4, 4, 1, 1) and after.shape == (6, 6, 1, 1)
    x = np.random.default_rng(2).standard_normal((2, 4, 5, 5)).astype(np.float32)
    conv = torch.nn.functional.conv2d
    expected = conv(conv(conv(torch.from_numpy(x), torch.from_numpy(before)),
                         torch.from_numpy(weight), padding=1), torch.from_numpy(after)).numpy()
    proto = ir.to_proto(model)
    got = session(proto.SerializeToString()).run(None, {"x": x})[0]
    assert relative(expected, got) <= 1e-5


def test_a_cover_in_context_is_worth_what_it_saved_there():
    """t_cover = t_dense - (t_dense,context - t_cover,context), by hand; never below 1% of
    t_dense (noise cannot make a cover free)."""
    one, two = Setting(1, 1), Setting(64, 1)
    got = saved_in_context({one: 10.0, two: 100.0}, {one: 12.0, two: 130.0},
                           {one: 9.0, two: 160.0})
    assert got == {one: 7.0, two: 130.0}
    assert saved_in_context({one: 10.0}, {one: 12.0}, {one: 0.5}) == {one: 0.1}


def test_only_fp32_convs_are_timed_in_context(monkeypatch):
    """A Gemm's candidates (and, in test_int8_times_the_candidates_quantized, int8 ones) are
    timed alone: the blocked channel layout is a Conv's."""
    keys = []

    def times(self, candidates, shape, dtype=None):
        keys.append([key for key, _ in candidates])
        return [{s: 10.0 for s in self.settings} for _ in candidates]

    monkeypatch.setattr(timing_module.Timer, "times", times)
    model = nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    with torch.no_grad():
        model[0].weight[:4, 6:] = 0
        model[0].weight[4:, :6] = 0
    SparseCompute((Setting(1, 1),))(to_onnx(model, torch.randn(2, 12)))
    assert keys and not any(IN_CONTEXT in key for layer in keys for key in layer)
    keys.clear()
    SparseCompute((Setting(1, 1),))(to_onnx(masked(Chain()), torch.randn(2, 16, 4, 4)))
    convs = [layer for layer in keys if layer[0].startswith("fp32|Conv")]
    assert convs and all(IN_CONTEXT not in layer[0] for layer in convs)
    assert all(key.endswith(IN_CONTEXT) for layer in convs for key in layer[1:])


@pytest.mark.parametrize(("pairs", "why"), [
    ([[1.0, 1.0], [1.0, 1.2], [1.0, 0.9]] + [[1.0, 0.5]] * 3, None),
    ([[1.0, 1.01], [1.0, 1.02], [1.0, 0.9]] + [[1.0, 0.5]] * 3,
     "the whole model measured slower with the covers at batch 1"),
    ([[1.0, 0.99]] * 3 + [[2.0, 1.0], [1.0, 0.99], [1.0, 0.995]],
     "the whole model measured no faster with the covers at any"),
])
def test_the_whole_model_keeps_covers_that_gain_somewhere_and_lose_nowhere(monkeypatch,
                                                                           pairs, why):
    """(off ms, auto ms) of three session pairs at batch 1, then three at 64; the median
    ratio counts: a tie at one (one pair 1.2x slower) and 2x at the other stays; a median 1%
    slower anywhere, or at most 1% faster everywhere (one pair 2x faster), is rejected,
    saying which. The times reported are each model's median."""
    assert sparse_stage.WHOLE_MODEL_PAIRS == 3
    replies = iter(pairs)
    monkeypatch.setattr(sparse_stage, "interleaved_ms",
                        lambda models, feeds, threads, rounds, min_ms=0.0: next(replies))
    x = torch.randn(2, 12)
    proto = ir.to_proto(to_onnx(nn.Linear(12, 3).eval(), x))
    times: dict = {}
    rejected = sparse_stage.covers_rejected(proto, proto, (Setting(1, 1), Setting(64, 1)),
                                            (x,), times)
    assert (rejected is None) if why is None else rejected.startswith(why)
    later = pairs[3:]
    assert times["batch 64, 1 thread(s)"] == {"off": sorted(p[0] for p in later)[1],
                                              "auto": sorted(p[1] for p in later)[1]}


def test_an_export_with_a_crop_is_verified_and_reported(tmp_path, monkeypatch):
    """Through the pipeline (the whole-model timing faked: with the crop, half the time): the
    file reads the box, verifies against the masked model, and --verbose's table says so."""
    from relief_export.pipeline.report import sparse_table

    monkeypatch.setattr(sparse_stage, "interleaved_ms",
                        lambda models, feeds, threads, rounds, min_ms=0.0: [2.0, 1.0])
    report = rx.export_onnx(image_mlp(), tmp_path / "m.onnx", input_shape=[1, 1, 6, 6],
                            sparse_compute="auto", tune_batches=[4], align=1)
    assert report.max_relative_error is not None and report.max_relative_error <= 1e-4
    first = report.sparse_compute[0]
    assert first["crop"].startswith("12 of 36 inputs") and first["macs_dense"] == 5 * 36
    assert "reads 12 of 36 inputs: [0:1, 1:5, 2:5] of [1, 6, 6]" in sparse_table(report)
    nodes = onnx.load(tmp_path / "m.onnx").graph.node
    assert any(n.op_type == "Slice" and "crop" in n.name for n in nodes)


def test_a_split_of_the_previous_blocks_reads_their_outputs_directly():
    """Linear(12, 6) in 2 blocks (inputs 0-3 and 6-11, one Split of the network input), then
    Linear(6, 4) in 2 blocks over the first layer's two blocks (channels 0-2 and 3-5): its
    Split of the first layer's Concat becomes Slices that read the blocks' outputs
    themselves, so one Split (of the input) and one Concat (the second layer's) are left."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 4), nn.ReLU(),
                          nn.Linear(4, 2)).eval()
    with torch.no_grad():
        model[0].weight[:3, 4:] = 0
        model[0].weight[3:, :6] = 0
        model[2].weight[:2, 3:] = 0
        model[2].weight[2:, :3] = 0
    x = torch.randn(5, 12)
    exported = to_onnx(model, x)
    SparseCompute(force="cover")(exported)
    splits = [n for n in exported.graph if n.op_type == "Split"]
    assert len(splits) == 1 and splits[0].inputs[0] is exported.graph.inputs[0]
    assert [n.op_type for n in exported.graph].count("Concat") == 1
    with torch.no_grad():
        expected = model(x).numpy()
    runtime, reference = run_both(exported, x.numpy())
    assert relative(expected, runtime) <= 1e-5 and relative(expected, reference) <= 1e-5


def test_a_layer_with_no_cover_below_dense_is_left_untimed():
    """Linear(64, 8) reading 63 of its 64 inputs: the one block costs 63/64 + 0.02 >= 1, so
    nothing is timed and the layer stays dense (force="cover" still writes the block)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    with torch.no_grad():
        model[0].weight[:, 5] = 0
    exported = to_onnx(model, torch.randn(2, 64))
    compute = SparseCompute()
    compute(exported)
    first = compute.choices[0]
    assert (first.chosen, first.why) == ("dense", "no cover the cost model puts below the "
                                                  "dense layer")
    assert first.ms_dense == {} and first.ms_candidates == {}
    forced = SparseCompute(force="cover")
    forced(to_onnx(model, torch.randn(2, 64)))
    assert forced.choices[0].chosen == "cover" and forced.choices[0].macs_cover == 8 * 63
