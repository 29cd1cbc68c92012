"""Sparse compute: covered layers compute the masked model's function, in onnxruntime and in
onnx.reference, whichever way the units' order is restored."""

import json

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import torch
from onnx.reference import ReferenceEvaluator
from torch import nn

import relief_export as rx
from relief_export.bench.families import FAMILIES, available
from relief_export.bench.families import masked as family_masked
from relief_export.bench.masks import hidden_group_masks
from relief_export.errors import ReliefError
from relief_export.int8 import int8_samples, to_int8
from relief_export.onnx.emit import to_onnx
from relief_export.onnx.passes import SparseCompute
from relief_export.onnx.sparse import timing as timing_module
from relief_export.onnx.sparse import timing_cache as timing_cache_module
from relief_export.onnx.sparse.timing import Setting
from relief_export.pipeline import sparse_stage as sparse_stage_module
from relief_export.runtime.ort import session

from ..helpers import run_cli


class Chain(nn.Module):
    """conv -> relu -> conv -> pool -> conv -> mean -> flatten -> linear -> linear."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(16, 32, 3, padding=1), nn.Conv2d(32, 32, 3, padding=1)
        self.c3, self.fc1 = nn.Conv2d(32, 32, 1), nn.Linear(32, 24)
        self.fc2 = nn.Linear(24, 5)

    def forward(self, x):
        y = torch.max_pool2d(torch.relu(self.c2(torch.relu(self.c1(x)))), 2)
        return self.fc2(torch.relu(self.fc1(self.c3(y).mean((2, 3)))))


class Residual(nn.Module):
    """c1's units are read twice (its order must be restored by a Gather); c2's output meets
    a residual add (onnxruntime fuses the add into a dense conv: c2 stays dense)."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(16, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1)
        self.c3 = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        y = torch.relu(self.c1(x))
        return self.c3(self.c2(y * torch.sigmoid(y)) + x)


class Tokens(nn.Module):
    """Linears on [batch, 6 tokens, 16]: torch writes MatMul + Add (channels on the last
    axis); a's units pass a GELU (decomposed: a Gather restores them), b's a ReLU into c,
    whose weight rows absorb them."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(16, 32), nn.Linear(32, 32), nn.Linear(32, 8)

    def forward(self, x):
        return self.c(torch.relu(self.b(nn.functional.gelu(self.a(x)))))


class Flattened(nn.Module):
    """conv -> flatten -> linear: the linear's columns move in blocks of H * W."""

    def __init__(self):
        super().__init__()
        self.c1, self.fc = nn.Conv2d(16, 32, 3, padding=1), nn.Linear(32 * 4 * 4, 8)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.c1(x)), 1))


def masked(model: nn.Module, groups: int = 4) -> nn.Module:
    torch.manual_seed(0)
    model = model.eval()
    hidden_group_masks(model, groups=groups, seed=1)
    return model


def run_both(model: ir.Model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    proto = ir.to_proto(model)
    runtime = session(proto.SerializeToString()).run(None, {"input": x})[0]
    reference = ReferenceEvaluator(proto).run(None, {"input": x})[0]
    return runtime, reference


def relative(expected: np.ndarray, got: np.ndarray) -> float:
    return float(np.abs(expected - got).max() / np.abs(expected).max())


@pytest.mark.parametrize(("build", "orders"), [
    (Chain, {"absorbed"}), (Residual, {"gather"}), (Flattened, {"absorbed"})])
def test_forced_covers_compute_the_same_function(build, orders):
    model = masked(build())
    x = torch.randn(3, 16, 4, 4)
    exported = to_onnx(model, x)
    compute = SparseCompute(force="cover")
    compute(exported)
    covered = [c for c in compute.choices if c.chosen == "cover"]
    assert covered and {c.reorder for c in covered} <= orders
    assert {c.reorder for c in covered} & orders
    for choice in covered:  # 4 hidden groups: at most a quarter of the MACs, plus strays
        assert (choice.blocks >= 2 and choice.macs_cover == choice.macs_nonzero) or \
            choice.macs_cover < choice.macs_compacted
    with torch.no_grad():
        expected = model(x).numpy()
    runtime, reference = run_both(exported, x.numpy())
    assert relative(expected, runtime) <= 1e-5
    assert relative(expected, reference) <= 1e-5
    assert all(n.domain in ("", "ai.onnx") for n in exported.graph)
    read = {v.name for n in exported.graph for v in n.inputs if v is not None}
    assert set(exported.graph.initializers) <= read  # the replaced weights are gone


def test_matmul_layers_are_covered_on_the_last_axis():
    model = masked(Tokens())
    x = torch.randn(3, 6, 16)
    exported = to_onnx(model, x)
    assert [n.op_type for n in exported.graph].count("MatMul") == 3
    compute = SparseCompute(force="cover")
    compute(exported)
    a, b, c = compute.choices
    assert (a.op, a.chosen, a.reorder) == ("MatMul", "cover", "gather")
    assert (b.op, b.chosen, b.reorder) == ("MatMul", "cover", "absorbed")
    assert c.chosen == "dense"  # 8 units reading all of b's 4 groups: no cheaper cover
    # MACs per sample by hand: 6 token positions x 32 units x 16 inputs
    assert a.macs_compacted == 6 * 32 * 16 and b.macs_compacted == 6 * 32 * 32
    nonzero = int(np.count_nonzero(model.b.weight.detach().numpy()))
    assert b.macs_nonzero == 6 * nonzero and b.macs_cover < b.macs_compacted
    ops = [n.op_type for n in exported.graph]
    assert ops.count("MatMul") == a.blocks + b.blocks + 1
    with torch.no_grad():
        expected = model(x).numpy()
    runtime, reference = run_both(exported, x.numpy())
    assert relative(expected, runtime) <= 1e-5 and relative(expected, reference) <= 1e-5


def test_a_layer_feeding_a_residual_add_stays_dense():
    exported = to_onnx(masked(Residual()), torch.randn(2, 16, 4, 4))
    compute = SparseCompute(force="cover")
    compute(exported)
    first, second = compute.choices[:2]
    assert (first.chosen, first.reorder) == ("cover", "gather")
    assert second.chosen == "dense" and "residual add" in second.why


def test_block_structure_of_a_chain_by_hand():
    """c2 of Chain with 4 hidden groups: 4 blocks, one per group, each its units x its
    channels x 9 taps x 16 positions, so the cover computes exactly the nonzero weights;
    c1's 4 groups also make its output order, which c2's weight absorbs."""
    model = masked(Chain())
    exported = to_onnx(model, torch.randn(2, 16, 4, 4))
    compute = SparseCompute(force="cover")
    compute(exported)
    first, second = compute.choices[0], compute.choices[1]
    assert first.shape == [32, 16, 3, 3] and first.reorder == "absorbed"
    nonzero = int(np.count_nonzero(model.c2.weight.detach().numpy()))
    assert second.macs_nonzero == nonzero * 16
    sizes = [(len(rows), len(cols)) for rows, cols in _groups(model.c2.weight)]
    assert second.blocks == len(sizes) == 4
    assert second.macs_cover == second.macs_nonzero == sum(r * c for r, c in sizes) * 9 * 16
    assert second.macs_compacted == 32 * 32 * 9 * 16


def _groups(weight: torch.Tensor) -> list[tuple[set[int], set[int]]]:
    """Units grouped by the set of channels they read (hidden groups: one set per group)."""
    reads = weight.detach().flatten(2).ne(0).any(2)
    found: dict[frozenset[int], set[int]] = {}
    for unit, row in enumerate(reads):
        found.setdefault(frozenset(torch.nonzero(row).flatten().tolist()), set()).add(unit)
    return [(units, set(cols)) for cols, units in found.items()]


def test_timing_keeps_the_dense_layer_unless_the_cover_is_faster():
    model = masked(Chain())
    exported = to_onnx(model, torch.randn(2, 16, 4, 4))
    compute = SparseCompute((Setting(1, 1), Setting(8, 1)))
    compute(exported)
    for choice in compute.choices:
        if choice.ms_cover:
            assert set(choice.ms_cover) == set(choice.ms_dense) == {
                "batch 1, 1 thread(s)", "batch 8, 1 thread(s)"}
            faster = all(choice.ms_cover[k] <= 0.97 * choice.ms_dense[k]
                         for k in choice.ms_dense)
            assert (choice.chosen == "cover") == faster, choice
    assert compute.timer.timed >= 2


def test_export_with_sparse_compute_is_verified_and_reported(tmp_path):
    model = masked(Chain())
    report = rx.export_onnx(model, tmp_path / "m.onnx", input_shape=[1, 16, 4, 4],
                            sparse_compute="auto", tune_batches=[1, 4], align=1)
    assert report.max_relative_error is not None and report.max_relative_error <= 1e-4
    assert [layer["op"] for layer in report.sparse_compute] == ["Conv"] * 3 + ["Gemm"] * 2
    # dense MACs per sample, from the compaction report, by hand: c1 16 x 32 x 9 taps x 16
    assert report.sparse_compute[0]["weight"] == "c1.weight"
    assert report.sparse_compute[0]["macs_dense"] == 32 * 16 * 9 * 16
    assert report.to_dict()["sparse_compute"] == report.sparse_compute
    x = torch.randn(5, 16, 4, 4)
    got = session(str(tmp_path / "m.onnx")).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        assert relative(model(x).numpy(), got) <= 1e-5


def test_a_timing_cache_outlives_the_export(tmp_path, monkeypatch):
    """--tune-cache: the first pass times every candidate and writes them; a second pass on
    the same layers times nothing and decides the same; another machine's entries stay in
    the file but are not used."""
    exported = to_onnx(masked(Chain()), torch.randn(2, 16, 4, 4))
    cache = tmp_path / "timing.json"
    settings = (Setting(1, 1), Setting(4, 1))
    first = SparseCompute(settings, cache_file=cache)
    first(ir.serde.deserialize_model(ir.to_proto(exported)))
    document = json.loads(cache.read_text())
    [(machine, rows)] = document["machines"].items()
    assert document["version"] == 1 and "onnxruntime" in machine
    assert first.timer.timed == len(rows) >= 2 and {r[1] for r in rows} == {1, 4}
    again = SparseCompute(settings, cache_file=cache)
    again(ir.serde.deserialize_model(ir.to_proto(exported)))
    assert again.timer.timed == 0
    assert [(c.chosen, c.ms_dense, c.ms_cover) for c in again.choices] == \
        [(c.chosen, c.ms_dense, c.ms_cover) for c in first.choices]
    monkeypatch.setattr(timing_cache_module, "machine_key", lambda rounds: "another machine")
    monkeypatch.setattr(timing_module, "machine_key", lambda rounds: "another machine")
    elsewhere = SparseCompute(settings, cache_file=cache)
    elsewhere(ir.serde.deserialize_model(ir.to_proto(exported)))
    assert elsewhere.timer.timed == len(rows)
    assert set(json.loads(cache.read_text())["machines"]) == {machine, "another machine"}


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", "not readable JSON"), ('{"version": 7, "machines": {}}', "version-1"),
    ('{"version": 1, "machines": {"m": [["k", 0, 1, 2.0]]}}', None),
    ('{"version": 1, "machines": {"m": "rows"}}', "version-1")])
def test_a_damaged_timing_cache_is_one_error_and_stays(tmp_path, monkeypatch, text, message):
    monkeypatch.setattr(timing_cache_module, "machine_key", lambda rounds: "m")
    monkeypatch.setattr(sparse_stage_module, "machine_key", lambda rounds: "m")
    cache, out = tmp_path / "timing.json", tmp_path / "m.onnx"
    cache.write_text(text)
    with pytest.raises(ReliefError, match=f"timing cache {cache}: .*; delete it") as error:
        rx.export_onnx(masked(Chain()), out, input_shape=[1, 16, 4, 4],
                       sparse_compute="auto", tune_cache=cache)
    assert message is None or message in str(error.value)
    assert cache.read_text() == text and not out.exists()


def test_tune_cache_needs_sparse_compute_and_a_writable_place(tmp_path):
    out = tmp_path / "m.onnx"
    with pytest.raises(ReliefError, match="--tune-cache applies to --sparse-compute auto"):
        rx.export_onnx(masked(Chain()), out, input_shape=[1, 16, 4, 4],
                       tune_cache=tmp_path / "t.json")
    with pytest.raises(ReliefError, match="does not exist"):
        rx.export_onnx(masked(Chain()), out, input_shape=[1, 16, 4, 4], sparse_compute="auto",
                       tune_cache=tmp_path / "missing" / "t.json")
    assert not out.exists()


@pytest.mark.parametrize(("options", "message"), [
    ({"sparse_compute": "fast"}, "sparse_compute"),
    ({"sparse_compute": "auto", "tune_batches": []}, "tune_batches"),
    ({"sparse_compute": "auto", "tune_batches": [0]}, "tune_batches"),
    ({"sparse_compute": "auto", "tune_threads": "1"}, "tune_threads"),
])
def test_bad_sparse_compute_options_are_refused(tmp_path, options, message):
    with pytest.raises(ReliefError, match=message):
        rx.export_onnx(masked(Chain()), tmp_path / "m.onnx", input_shape=[1, 16, 4, 4],
                       **options)
    assert not (tmp_path / "m.onnx").exists()


def test_cli_sparse_compute_reports_each_layer(tmp_path, capsys):
    model = masked(Chain())
    checkpoint = rx.save_checkpoint(tmp_path / "chain.pt", model,
                                    arch={"factory": "tests.onnx.test_sparse_compute:Chain",
                                          "kwargs": {}}, input_shape=[1, 16, 4, 4])
    out = tmp_path / "chain.onnx"
    code, text, err = run_cli([checkpoint, "--out", out, "--allow-factory", "--align", "1",
                               "--sparse-compute", "auto", "--tune-batch", "1,2", "--verbose"],
                              capsys)
    assert code == 0, err
    assert "sparse compute: layers as dense blocks" in text
    assert "sparse compute: layer 1/5 (node_conv2d): cover search and timing" in err
    header = next(line for line in text.splitlines() if line.startswith("layer ") and
                  "MACs cover" in line)
    assert header.split()[:5] == ["layer", "MACs", "dense", "MACs", "compacted"]
    x = torch.randn(2, 16, 4, 4)
    with torch.no_grad():
        expected = model(x).numpy()
    assert relative(expected, session(str(out)).run(None, {"input": x.numpy()})[0]) <= 1e-5
    for extra, message in [(["--sparse-compute", "fast"], "invalid choice"),
                           (["--sparse-compute", "auto", "--tune-batch", "0"], ">= 1"),
                           (["--sparse-compute", "auto", "--tune-threads", "x"],
                            "comma-separated integers"),
                           (["--tune-cache", str(tmp_path / "t.json")],
                            "--tune-cache applies to --sparse-compute auto only"),
                           (["--sparse-compute", "auto", "--tune-cache", str(tmp_path)],
                            "--tune-cache: ")]:
        try:
            code, _, err = run_cli([checkpoint, "--out", tmp_path / "bad.onnx",
                                    "--allow-factory", *extra], capsys)
        except SystemExit as exit_:  # argparse's own errors
            code, err = exit_.code, capsys.readouterr().err
        assert code == 2 and message in err, err
        assert not (tmp_path / "bad.onnx").exists()


def test_covered_blocks_quantize_to_int8():
    """Every block is a layer of its own for onnxruntime.quantization: all int8, and the
    int8 model stays close to the fp32 one."""
    model = masked(Chain())
    exported = to_onnx(model, torch.randn(2, 16, 4, 4))
    SparseCompute(force="cover")(exported)
    fp32 = ir.to_proto(exported)
    samples = int8_samples(None, [1, 16, 4, 4], 64, True)
    quantized, report = to_int8(fp32, samples, method="minmax", layers="all",
                                accept_drop=100.0)
    assert report.fp32_layers == []
    assert sum(n.op_type == "Conv" for n in quantized.graph.node) > 3  # the blocks
    x = samples.evaluation[:16]
    expected = session(fp32.SerializeToString()).run(None, {"input": x})[0]
    got = session(quantized.SerializeToString()).run(None, {"input": x})[0]
    assert relative(expected, got) <= 0.1


def forced_covers(settings, progress=None, cache_file=None, int8=None):
    return SparseCompute(settings, force="cover")


def test_covers_are_dropped_when_the_whole_model_is_slower(tmp_path, monkeypatch):
    """Layer timings said faster; the whole model timed slower at batch 4: the file is the
    model without covers, and each layer says why."""
    import relief_export.pipeline.sparse_stage as stage

    monkeypatch.setattr(stage, "SparseCompute", forced_covers)
    monkeypatch.setattr(stage, "interleaved_ms",
                        lambda models, feeds, threads, rounds, min_ms=0.0: [1.0, 2.0])
    model = masked(Chain())
    report = rx.export_onnx(model, tmp_path / "m.onnx", input_shape=[1, 16, 4, 4],
                            sparse_compute="auto", tune_batches=[4], align=1)
    assert report.sparse_whole_model_ms == {"batch 4, 1 thread(s)": {"off": 1.0, "auto": 2.0}}
    assert {layer["chosen"] for layer in report.sparse_compute} == {"dense"}
    assert any("whole model measured slower" in layer["why"] for layer in report.sparse_compute)
    nodes = onnx.load(tmp_path / "m.onnx").graph.node
    assert [n.op_type for n in nodes].count("Conv") == 3
    assert not any("_block" in n.name for n in nodes)


FAMILY_PARAMS = [name if not (FAMILIES[name].needs or FAMILIES[name].archive) else
                 pytest.param(name, marks=pytest.mark.slow) for name in FAMILIES]


@pytest.mark.parametrize("name", FAMILY_PARAMS)
def test_every_cover_is_exact_on_the_families(name, tmp_path, monkeypatch):
    """Every cover forced in (whatever the timing says), under unstructured masks: the
    export's own verification (onnxruntime vs the masked model, <= 1e-4) must pass."""
    import relief_export.pipeline.sparse_stage as stage

    family = FAMILIES[name]
    if not available(family):
        pytest.skip(f"needs {family.needs}")
    monkeypatch.setattr(stage, "SparseCompute", forced_covers)
    monkeypatch.setattr(stage, "interleaved_ms", lambda models, feeds, threads, rounds, min_ms=0.0:
                        [2.0, 1.0])
    model, inputs = family_masked(name, "l1 90%")
    report = rx.export_onnx(model, tmp_path / "m.onnx", example_inputs=inputs, align=1,
                            sparse_compute="auto", tune_batches=[2])
    assert report.max_relative_error is not None and report.max_relative_error <= 1e-4
    covered = [layer for layer in report.sparse_compute if layer["chosen"] == "cover"]
    assert all(layer["macs_cover"] < layer["macs_compacted"] for layer in covered)
    if not (family.needs or family.archive):  # each hand-written family has covered layers
        assert covered, report.sparse_compute


@pytest.mark.parametrize(("int8_times", "kept"), [([1.0, 2.0], False), ([2.0, 1.0], True)])
def test_int8_keeps_the_covers_only_where_they_stay_faster(tmp_path, monkeypatch, int8_times,
                                                           kept):
    """Covers chosen on their layers' int8 timings; the model without them is quantized too,
    and the covers stay only if the int8 model with them is not slower (no fp32 whole-model
    timing: the file is int8)."""
    import relief_export.pipeline.sparse_stage as stage

    monkeypatch.setattr(stage, "SparseCompute", forced_covers)
    monkeypatch.setattr(stage, "interleaved_ms",
                        lambda models, feeds, threads, rounds, min_ms=0.0: int8_times)
    report = rx.export_onnx(masked(Chain()), tmp_path / "m.onnx", input_shape=[1, 16, 4, 4],
                            sparse_compute="auto", tune_batches=[4], align=1, int8=True,
                            calib_synthetic=True, int8_layers="all",
                            accept_accuracy_drop=100.0)
    assert set(report.sparse_whole_model_ms) == {"int8, batch 4, 1 thread(s)"}
    covered = [layer for layer in report.sparse_compute if layer["chosen"] == "cover"]
    nodes = onnx.load(tmp_path / "m.onnx").graph.node
    assert any("_block" in n.name for n in nodes) == kept == bool(covered)
    if not kept:
        assert all("in int8 the whole model measured slower" in layer["why"]
                   for layer in report.sparse_compute if layer["blocks"] > 1)
    assert report.int8 is not None and report.int8["fp32_layers"] == []


def test_int8_times_the_candidates_quantized():
    """With int8, every candidate (the dense layer and each cover) is timed as the quantizer
    makes it; the choices say so and the cache keys keep int8 and fp32 times apart."""
    from relief_export.onnx.quantize import quantize

    made = []

    def recording(model, samples):
        made.append(samples.shape)
        return quantize(model, samples)

    exported = to_onnx(masked(Chain()), torch.randn(2, 16, 4, 4))
    compute = SparseCompute((Setting(2, 1),), int8=("int8", recording))
    compute(exported)
    timed = [c for c in compute.choices if c.ms_dense]
    assert timed and len(made) == sum(1 + len(c.ms_candidates) for c in timed)
    assert all("(int8)" in c.why for c in timed)
    assert all(key.startswith("int8|") for key, _ in compute.timer.cache)
    assert all(shape[0] == 8 for shape in made)  # CALIBRATION_SAMPLES random inputs


def test_the_fastest_cover_is_chosen_coarser_or_not(monkeypatch):
    """c2 of Chain (4 hidden groups): the finest cover (4 blocks) and the 2-block one are
    timed against dense (faked: dense 10 ms, 2 blocks 6 ms, any other cover 9 ms); the one
    of the smallest worst-case ratio wins, and the file computes the same function."""

    def times(self, candidates, shape, dtype=None):
        result = []
        for key, _ in candidates:
            blocks = sum(key.count(f"'{kind}')") for kind in ("all", "range", "gather"))
            ms = 10.0 if blocks == 0 else 6.0 if blocks == 2 else 9.0
            result.append({s: ms for s in self.settings})
        return result

    monkeypatch.setattr(timing_module.Timer, "times", times)
    model = masked(Chain())
    x = torch.randn(3, 16, 4, 4)
    exported = to_onnx(model, x)
    compute = SparseCompute((Setting(1, 1),))
    compute(exported)
    second = compute.choices[1]
    assert set(second.ms_candidates) == {"4 blocks", "2 blocks"}
    assert (second.chosen, second.blocks) == ("cover", 2)
    assert second.ms_cover == {"batch 1, 1 thread(s)": 6.0}
    assert "2 blocks measured fastest" in second.why
    with torch.no_grad():
        expected = model(x).numpy()
    runtime, reference = run_both(exported, x.numpy())
    assert relative(expected, runtime) <= 1e-5 and relative(expected, reference) <= 1e-5


def test_an_activation_with_computed_constants_is_timed(tmp_path):
    """ReLU6 is a Clip whose bounds torch computes with Cast nodes: the single-layer
    candidates carry the bounds as initializers of their own; the export verifies."""
    model, inputs = family_masked("inverted residual (depthwise, ReLU6)", "l1 90%")
    report = rx.export_onnx(model, tmp_path / "m.onnx", example_inputs=inputs, align=1,
                            sparse_compute="auto", tune_batches=[2])
    timed = [layer for layer in report.sparse_compute if layer["ms_dense"]]
    assert timed and report.max_relative_error is not None
    assert report.max_relative_error <= 1e-4


def test_inputs_no_unit_reads_are_left_out_by_one_block():
    """A network input's features can't be compacted away: a first layer that reads 5 of its
    20 inputs (1, 4, 7, 10, 13, no block structure) is one block of all 8 units over those 5
    (a Gather), 8 x 5 MACs instead of 8 x 20."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    with torch.no_grad():
        keep = torch.zeros(20, dtype=torch.bool)
        keep[[1, 4, 7, 10, 13]] = True
        model[0].weight[:, ~keep] = 0
    x = torch.randn(4, 20)
    exported = to_onnx(model, x)
    compute = SparseCompute(force="cover")
    compute(exported)
    first = compute.choices[0]
    assert (first.chosen, first.blocks, first.reorder) == ("cover", 1, "none")
    assert (first.macs_compacted, first.macs_cover) == (8 * 20, 8 * 5)
    gathers = [n for n in exported.graph if n.op_type == "Gather"]
    assert [list(constant_of(n.inputs[1])) for n in gathers] == [[1, 4, 7, 10, 13]]
    with torch.no_grad():
        expected = model(x).numpy()
    runtime, reference = run_both(exported, x.numpy())
    assert relative(expected, runtime) <= 1e-5 and relative(expected, reference) <= 1e-5


def constant_of(value):
    return value.const_value.numpy()


def test_short_runs_are_timed_for_at_least_min_ms(monkeypatch):
    """Runs of about 2 ms with min_ms = 40: about 20 rounds instead of the 3 asked for, the
    warm-up rounds apart; without min_ms, the 3."""
    import time

    runs = []

    class TwoMilliseconds:
        def run(self, outputs, feed):
            runs.append(1)
            time.sleep(0.002)

    monkeypatch.setattr(timing_module, "session", lambda model, threads: TwoMilliseconds())
    feeds = [{"x": np.zeros(1, np.float32)}]
    timing_module.interleaved_ms([b""], feeds, 1, 3)
    assert len(runs) == timing_module.WARMUP + 3
    runs.clear()
    [median] = timing_module.interleaved_ms([b""], feeds, 1, 3, min_ms=40.0)
    assert 12 <= len(runs) - timing_module.WARMUP <= 21 and median >= 2.0
