import json
import re

import numpy as np
import onnx_ir as ir
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from relief_export import data
from relief_export.bench import benchmark
from relief_export.bench.graph_stats import graph_stats
from relief_export.bench.latency import time_interleaved
from relief_export.bench.report import BenchReport, Measurement, ModelInfo
from relief_export.bench.run import top1
from relief_export.errors import ReliefError
from relief_export.onnx.emit import to_onnx
from relief_export.runtime.ort import session

from ..helpers import run_cli


def conv_gemm_model(path, input_side=8, seed=0):
    """Conv 1->2 (3x3, no padding) then Gemm (2*6*6 -> 3): 648 + 216 = 864 MACs."""
    rng = np.random.default_rng(seed)
    conv = rng.standard_normal((2, 1, 3, 3)).astype(np.float32)
    gemm = rng.standard_normal((3, 2 * (input_side - 2) ** 2)).astype(np.float32)
    gemm[:, :10] = 0
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"]),
             helper.make_node("Flatten", ["c"], ["f"]),
             helper.make_node("Gemm", ["f", "g"], ["output"], transB=1)]
    graph = helper.make_graph(
        nodes, "m",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                       ["N", 1, input_side, input_side])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(conv, "w"), numpy_helper.from_array(gemm, "g")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    path.write_bytes(model.SerializeToString())
    return path


def test_graph_stats_count_parameters_and_macs(tmp_path):
    stats = graph_stats(conv_gemm_model(tmp_path / "m.onnx"))
    assert stats.macs == 2 * 1 * 9 * 36 + 72 * 3
    assert stats.parameters == 18 + 216
    assert stats.nonzero == 18 + 216 - 30
    assert stats.input_shape == (1, 8, 8) and stats.input_name == "input"


class Recorder:
    def __init__(self, name, log):
        self.name, self.log = name, log

    def get_inputs(self):
        return [type("Input", (), {"name": "input"})()]

    def run(self, outputs, feeds):
        self.log.append(self.name)


def test_repeats_are_interleaved_across_models():
    log: list[str] = []
    times = time_interleaved({"A": Recorder("A", log), "B": Recorder("B", log)},
                             np.zeros(1), warmup=1, repeats=3)
    assert log == ["A", "B"] * 4
    assert [len(v) for v in times.values()] == [3, 3]


def test_top1_by_hand():
    class Fixed:
        def run(self, outputs, feeds):
            x = feeds["input"]
            return [np.stack([x[:, 0], x[:, 1]], 1)]  # logits = the two features

    images = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [0.0, 3.0]], np.float32)
    labels = np.array([0, 1, 1, 1])
    assert top1(Fixed(), "input", images, labels, batch=3) == pytest.approx(0.75)


def test_speedup_mac_limit_and_efficiency_by_hand():
    report = BenchReport([ModelInfo("dense", 100, 10, 10, 1000),
                          ModelInfo("pruned", 50, 10, 2, 250)], [4], [1], 0, 1)
    report.measurements = [Measurement("dense", 1, 4, 8.0, 8, 8, 500, 1),
                           Measurement("pruned", 1, 4, 4.0, 4, 4, 1000, 1)]
    (row,) = report.comparisons()
    assert row["speedup"] == 2.0 and row["mac_limit"] == 4.0 and row["efficiency"] == 0.5


def test_benchmark_json_plot_and_accuracy(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    path = tmp_path / "m.onnx"
    path.write_bytes(ir.to_proto(to_onnx(model, torch.rand(1, 1, 4, 4))).SerializeToString())
    pruned = tmp_path / "p.onnx"
    with torch.no_grad():
        model[1].weight[:, 8:] = 0
    pruned.write_bytes(ir.to_proto(to_onnx(model, torch.rand(1, 1, 4, 4))).SerializeToString())
    spec = "synthetic:1,4,4,3"
    report = benchmark([path, pruned], batch_sizes=(1, 4), threads=(1, 2), warmup=1,
                       repeats=3, data=spec, progress=False)
    assert len(report.measurements) == 2 * 2 * 2
    images, labels = data.load(spec, "test").tensors()
    with torch.no_grad():
        expected = float((model(images).argmax(1) == labels).float().mean())
    assert report.models[1].accuracy == pytest.approx(expected)
    report.write_json(tmp_path / "b.json")
    saved = json.loads((tmp_path / "b.json").read_text())
    assert saved["schema_version"] == 1
    assert set(saved) == {"schema_version", "batch_sizes", "threads", "warmup", "repeats",
                          "models", "measurements", "comparisons", "machine"}
    import os

    import onnxruntime

    assert saved["machine"]["cores"] == os.cpu_count()
    assert saved["machine"]["onnxruntime"] == onnxruntime.__version__
    assert saved["machine"]["load_1min"] >= 0 and saved["machine"]["cpu"]
    vector = f" ({saved['machine']['vector']})" if saved["machine"]["vector"] else ""
    assert report.table().startswith(f"machine: {saved['machine']['cpu']}{vector}, "
                                     f"{os.cpu_count()} cores, load ")
    assert set(saved["models"][0]) == {"path", "file_bytes", "parameters", "nonzero", "macs",
                                       "accuracy", "memory_bytes", "precision"}
    assert [m["precision"] for m in saved["models"]] == ["fp32"] * len(saved["models"])
    assert set(saved["measurements"][0]) == {"model", "threads", "batch", "median_ms",
                                             "p90_ms", "p99_ms", "throughput", "session_ms"}
    assert len(saved["comparisons"]) == 4
    for m in saved["measurements"]:
        assert 0 < m["median_ms"] <= m["p90_ms"] <= m["p99_ms"]
        assert m["throughput"] == pytest.approx(m["batch"] / (m["median_ms"] / 1e3))
    report.plot(tmp_path / "b.png")
    png = (tmp_path / "b.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_mismatched_models_are_refused(tmp_path, capsys):
    small = conv_gemm_model(tmp_path / "a.onnx", 8)
    large = conv_gemm_model(tmp_path / "b.onnx", 10)
    with pytest.raises(ReliefError, match="only models with the same input"):
        benchmark([small, large], progress=False)
    code, _, err = run_cli(["bench", small, large], capsys)
    assert code == 2 and "differs" in err
    code, _, err = run_cli(["bench", small, tmp_path / "none.onnx"], capsys)
    assert code == 2 and "no such file" in err
    code, _, err = run_cli(["bench", small, "--json-out", tmp_path / "no" / "b.json"], capsys)
    assert code == 2 and "does not exist" in err


def test_cli_writes_table_json_and_plot(tmp_path, capsys):
    model = conv_gemm_model(tmp_path / "a.onnx")
    code, out, _ = run_cli(["bench", model, model, "--batch", "1,2", "--repeats", "2",
                            "--warmup", "0", "--json-out", tmp_path / "b.json", "--plot",
                            tmp_path / "b.png"], capsys)
    assert code == 0 and "median ms" in out and "MAC limit" in out
    assert json.loads((tmp_path / "b.json").read_text())["batch_sizes"] == [1, 2]
    assert (tmp_path / "b.png").stat().st_size > 0


@pytest.mark.slow
def test_demo_end_to_end_in_quick_mode(tmp_path, capsys):
    code, _, err = run_cli(["demo", "--out", tmp_path / "demo", "--quick"], capsys)
    assert code == 0, err
    folder = tmp_path / "demo"
    report = (folder / "report.md").read_text()
    for heading in ("## lenet300_100", "## lenet5", "weights left", "median ms",
                    "## What the figures mean", "**MAC limit**", "machine: ",
                    "The stacked picture", "int8 export of the dense model",
                    "int8 export of the pruned model"):
        assert heading in report
    for name in ("lenet300_100", "lenet5"):  # the int8 rows, or why one is missing
        for kind in ("dense", "pruned"):
            path = folder / f"{name}-{kind}-int8.onnx"
            row = re.search(rf"{re.escape(str(path))} +int8 ", report)
            assert (path.exists() and row is not None) or \
                (not path.exists() and "int8 top-1 agreement with fp32 is" in report)
    for figure in ("accuracy_vs_weights.png", "latency.png", "lenet300_100_before_after.png"):
        assert (folder / figure).read_bytes().startswith(b"\x89PNG")
    x = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    for name in ("lenet300_100", "lenet5"):
        dense = session((folder / f"{name}-dense.onnx").read_bytes()).run(None, {"input": x})[0]
        assert dense.shape == (2, 10)
        pruned_bytes = (folder / f"{name}.onnx").stat().st_size
        assert pruned_bytes < (folder / f"{name}-dense.onnx").stat().st_size


def test_external_data_counts_in_file_bytes(tmp_path):
    """A file whose weights live in external data: its size is both files, parameters the same
    as when the weights are inside."""
    import onnx

    inside = conv_gemm_model(tmp_path / "inside.onnx")
    model = onnx.load(str(inside))
    outside = tmp_path / "outside.onnx"
    onnx.save_model(model, str(outside), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="outside.onnx.data",
                    size_threshold=0)
    data_file = tmp_path / "outside.onnx.data"
    assert data_file.stat().st_size >= 4 * (18 + 216)
    stats, reference = graph_stats(outside), graph_stats(inside)
    assert stats.file_bytes == outside.stat().st_size + data_file.stat().st_size
    assert stats.file_bytes > outside.stat().st_size + 4 * (18 + 216) - 1
    assert (stats.parameters, stats.nonzero, stats.macs) == \
        (reference.parameters, reference.nonzero, reference.macs)
    report = benchmark([inside, outside], batch_sizes=(1,), repeats=2, warmup=0,
                       progress=False, memory=False)
    assert [m.file_bytes for m in report.models] == [inside.stat().st_size, stats.file_bytes]


def test_plot_ticks_titles_and_size_bars(tmp_path, monkeypatch):
    """Latency axis ticked at exactly the measured batch sizes as plain numbers, a title on
    every panel, and size bars equal to the files' bytes (external data included)."""
    import onnx

    from relief_export.bench import report as report_module

    inside = conv_gemm_model(tmp_path / "inside.onnx")
    outside = tmp_path / "outside.onnx"
    onnx.save_model(onnx.load(str(inside)), str(outside), save_as_external_data=True,
                    location="outside.data", size_threshold=0)
    bench = benchmark([inside, outside], batch_sizes=(1, 3, 16), repeats=2, warmup=0,
                      progress=False, memory=False)
    figures = []
    monkeypatch.setattr(report_module, "png_bytes", lambda figure: figures.append(figure) or b"")
    bench.plot_bytes()
    latency, sizes = figures[0].axes
    figures[0].canvas.draw()
    assert [t.get_text() for t in latency.get_xticklabels()] == ["1", "3", "16"]
    assert all(axis.get_title() for axis in (latency, sizes))
    heights = [bar.get_height() * 1e6 for bar in sizes.patches]
    expected = [inside.stat().st_size,
                outside.stat().st_size + (tmp_path / "outside.data").stat().st_size]
    assert heights == pytest.approx(expected)
    assert heights[1] > heights[0] * 0.9  # the weights in outside.data are counted


def test_the_vector_level_is_the_widest_set_named():
    from relief_export.bench.machine import vector_level

    assert vector_level({"avx", "avx2", "fma"}) == "AVX2"
    assert vector_level({"avx2", "avx512f", "avx512_vnni"}) == "AVX-512 VNNI"
    assert vector_level({"avx2", "avx512f"}) == "AVX-512"
    assert vector_level({"sse4_2"}) == ""
