"""int8 export: onnxruntime.quantization on top of compaction, int8 weights in our sparse
formats, and a gate on top-1 agreement with fp32."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from relief_export import benchmark, data, models, read_model, save_checkpoint
from relief_export.onnx.quantize import needs_reduce_range
from relief_export.runtime.ort import session

from ..compile.masking import random_masks
from ..helpers import outputs, run_cli

MNIST_SHAPE = [1, 1, 28, 28]


def predictions(model_bytes: bytes, images: np.ndarray) -> np.ndarray:
    return session(model_bytes).run(None, {"input": images})[0].argmax(1)


def test_int8_export_end_to_end(trained_lenet, tmp_path, capsys):
    """Every layer in int8 (what ``auto`` chooses is machine-dependent; tested below)."""
    out, report_path, fp32_out = tmp_path / "q.onnx", tmp_path / "r.json", tmp_path / "f.onnx"
    code, stdout, _ = run_cli([trained_lenet, "--out", out, "--int8", "--int8-layers", "all",
                               "--report", report_path], capsys)
    assert code == 0
    assert run_cli([trained_lenet, "--out", fp32_out], capsys)[0] == 0
    int8 = json.loads(report_path.read_text())["int8"]
    assert int8["calibration"] == "256 training samples of mnist5k"
    assert set(int8["method_agreement"]) == {"minmax", "percentile", "entropy"}
    assert int8["method"] == max(int8["method_agreement"], key=int8["method_agreement"].get)
    check = int8["check"]
    images, labels = data.load("mnist5k", "test").tensors()
    images, labels = images[:check["samples"]], labels[:check["samples"]].numpy()
    # the numbers the report gives are those of the files and the torch model
    torch_top1 = outputs(read_model(trained_lenet).model, images).argmax(1).numpy()
    assert abs(check["fp32_accuracy"] - float(np.mean(torch_top1 == labels))) <= 0.002
    written = predictions(out.read_bytes(), images.numpy())
    assert check["int8_accuracy"] == pytest.approx(float(np.mean(written == labels)))
    assert check["agreement"] == pytest.approx(float(np.mean(
        written == predictions(fp32_out.read_bytes(), images.numpy()))))
    assert check["agreement"] >= 0.99
    assert abs(check["fp32_accuracy"] - check["int8_accuracy"]) <= 0.01
    assert "int8: top-1 agreement with fp32" in stdout and "int8: calibration" in stdout
    # int8 weights are stored in the sparse formats: about 2 bytes per nonzero
    tensors = json.loads(report_path.read_text())["tensors"]
    assert [t["name"] for t in tensors] == ["1.weight_quantized", "3.weight_quantized",
                                            "5.weight_quantized"]
    for tensor in tensors:
        assert tensor["format"] != "dense"
        assert tensor["stored_bytes"] <= 2.05 * tensor["nonzero"] + 16, tensor
    assert out.stat().st_size < 0.6 * fp32_out.stat().st_size
    metadata = {p.key: p.value for p in onnx.load(out).metadata_props}
    recorded = json.loads(metadata["int8"])
    assert recorded["calibration"] == f"{int8['method']} on {int8['calibration']}"
    assert recorded["reduce_range"] is int8["reduce_range"] is needs_reduce_range()
    assert recorded["chosen"] == int8["chosen"] == "int8 everywhere"
    assert recorded["fp32_layers"] == int8["fp32_layers"] == []
    assert recorded["measured_int8"] is None and int8["layers"] == []
    # bench counts the int8 weights as the same parameters and MACs, labelled int8
    bench = benchmark([fp32_out, out], batch_sizes=(2,), repeats=2, progress=False,
                      memory=False)
    fp32_info, int8_info = bench.models
    assert (fp32_info.precision, int8_info.precision) == ("fp32", "int8")
    assert int8_info.parameters == fp32_info.parameters and int8_info.macs == fp32_info.macs
    assert 0.99 * fp32_info.nonzero <= int8_info.nonzero <= fp32_info.nonzero
    code, shown, _ = run_cli(["inspect", out], capsys)
    assert code == 0 and "int8 choice" in shown and int8["chosen"] in shown


def test_7_bit_weights_on_request_keep_the_agreement(trained_lenet, tmp_path, capsys):
    """--int8-reduce-range on (for CPUs without VNNI): |q| <= 64 in every layer, recorded in
    the report and the file, and top-1 agreement with fp32 still >= 99%."""
    out, report_path = tmp_path / "q.onnx", tmp_path / "r.json"
    code, stdout, _ = run_cli([trained_lenet, "--out", out, "--int8", "--int8-layers", "all",
                               "--calib-method", "minmax", "--int8-reduce-range", "on",
                               "--weights", "dense", "--report", report_path], capsys)
    assert code == 0 and "7-bit (reduce range)" in stdout
    int8 = json.loads(report_path.read_text())["int8"]
    assert int8["reduce_range"] is True and int8["check"]["agreement"] >= 0.99
    model = onnx.load(out)
    assert json.loads({p.key: p.value for p in model.metadata_props}["int8"])["reduce_range"]
    weights = [onnx.numpy_helper.to_array(t) for t in model.graph.initializer
               if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 2]
    assert len(weights) == 3
    assert max(int(np.abs(w.astype(np.int16)).max()) for w in weights) == 64
    with pytest.raises(SystemExit) as exited:
        run_cli([trained_lenet, "--out", out, "--int8", "--int8-reduce-range", "half"], capsys)
    assert exited.value.code == 2 and "invalid choice: 'half'" in capsys.readouterr().err


@pytest.mark.slow
def test_auto_writes_the_fastest_of_the_three_it_timed(trained_lenet, tmp_path, capsys):
    out, report_path = tmp_path / "q.onnx", tmp_path / "r.json"
    code, _, err = run_cli([trained_lenet, "--out", out, "--int8", "--calib-method", "minmax",
                            "--int8-batch", "32", "--report", report_path], capsys)
    assert code == 0
    report = json.loads(report_path.read_text())
    int8 = report["int8"]
    times = int8["whole_model_ms"]
    assert set(times) == {"int8 per layer", "int8 everywhere", "fp32"} and int8["batch"] == 32
    assert int8["chosen"] == min(times, key=times.get)
    layers = [c["name"] for c in int8["layers"]]
    assert len(layers) == 3
    for choice in int8["layers"]:  # int8 < fp32 + transitions
        assert choice["int8"] == (choice["int8_ms"] < choice["fp32_ms"] + choice["transition_ms"])
    expected_fp32 = {"fp32": layers, "int8 everywhere": [],
                     "int8 per layer": [c["name"] for c in int8["layers"] if not c["int8"]]}
    assert int8["fp32_layers"] == expected_fp32[int8["chosen"]]
    quantized = any(n.op_type == "QuantizeLinear" for n in onnx.load(out).graph.node)
    assert quantized is (int8["chosen"] != "fp32")
    assert ("fp32 measured fastest" in err) is (int8["chosen"] == "fp32")
    assert any("fp32 measured fastest" in n for n in report["notes"]) is \
        (int8["chosen"] == "fp32")


def test_onnxruntime_folds_the_decoders_and_runs_int8_kernels(tmp_path, capsys):
    torch.manual_seed(0)
    model = models.build("lenet5").eval()
    random_masks(model, 3, unit_rate=0.2, connection_rate=0.8)
    source = save_checkpoint(tmp_path / "l5.pt", model, arch={"name": "lenet5", "kwargs": {}},
                             input_shape=MNIST_SHAPE, data="mnist5k")
    out = tmp_path / "q.onnx"
    code, _, _ = run_cli([source, "--out", out, "--int8", "--int8-layers", "all",
                          "--calib-method", "minmax", "--accept-accuracy-drop", "100"], capsys)
    assert code == 0
    written = onnx.load(out)
    assert any(n.name.startswith("relief_decode/") for n in written.graph.node)
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])
    optimized = [(n.op_type, n.name) for n in onnx.load(tmp_path / "optimized.onnx").graph.node]
    kinds = {op for op, _ in optimized}
    assert {"QLinearConv", "QGemm"} <= kinds, kinds
    assert not [name for _, name in optimized if "relief_decode" in name]
    assert not kinds & {"Conv", "Gemm", "ScatterND", "Cast"}


def near_tie_checkpoint(folder):
    """LeNet-300-100 whose ten logits differ by 1e-5 of their size: int8 rounding reorders
    them."""
    torch.manual_seed(0)
    model = models.build("lenet300_100")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        row = torch.rand(100, generator=generator)
        model[5].weight.copy_(row + 1e-5 * torch.randn(10, 100, generator=generator))
        model[5].bias.zero_()
    return save_checkpoint(folder / "tie.pt", model, arch={"name": "lenet300_100",
                                                           "kwargs": {}},
                           input_shape=MNIST_SHAPE, data="mnist5k")


@pytest.mark.slow
def test_the_agreement_gate_fails_with_exit_1_and_no_file(tmp_path, capsys):
    source = near_tie_checkpoint(tmp_path)
    out = tmp_path / "q.onnx"
    args = [source, "--out", out, "--int8", "--int8-layers", "all", "--calib-method",
            "minmax"]
    code, _, err = run_cli(args, capsys)
    assert code == 1 and not out.exists()
    assert "int8 top-1 agreement with fp32 is" in err and "below the 99.00% required" in err
    code, _, err = run_cli([*args, "--accept-accuracy-drop", "100"], capsys)
    assert code == 0 and out.exists(), err


@pytest.fixture()
def no_data_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = models.build("lenet300_100").eval()
    random_masks(model, 1, unit_rate=0.2, connection_rate=0.8)
    return save_checkpoint(tmp_path / "m.pt", model, arch={"name": "lenet300_100",
                                                           "kwargs": {}},
                           input_shape=MNIST_SHAPE)


@pytest.mark.parametrize("options, message", [
    ([], "--int8 needs calibration data: pass --calib-data SPEC"),
    (["--calib-data", "synthetic:3,32,32,10"],
     "calibration data synthetic:3,32,32,10: samples of shape [3, 32, 32] do not fit the "
     "model's input [1, 28, 28]"),
    (["--calib-data", "nope"], "unknown data spec 'nope'"),
    (["--fp16-weights"], "--int8 and --fp16-weights exclude each other"),
    (["--calib-method", "best"], "calib_method must be one of auto, minmax, percentile, "
                                 "entropy, got 'best'"),
    (["--int8-layers", "some"], "int8_layers must be one of auto, all, got 'some'"),
    (["--calib-samples", "0"], "calib_samples must be"),
    (["--accept-accuracy-drop", "-1"], "accept_accuracy_drop must be in [0, 100]"),
    (["--int8-batch", "0"], "int8_batch must be"),
])
def test_int8_bad_input_is_one_line_exit_2_and_no_file(no_data_checkpoint, tmp_path, capsys,
                                                       options, message):
    out = tmp_path / "q.onnx"
    code, _, err = run_cli([no_data_checkpoint, "--out", out, "--int8", *options], capsys)
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_calibration_options_need_int8(no_data_checkpoint, tmp_path, capsys):
    code, _, err = run_cli([no_data_checkpoint, "--out", tmp_path / "q.onnx", "--calib-data",
                            "mnist5k"], capsys)
    assert code == 2 and "the calibration options apply to int8 export only" in err


def test_a_layer_the_quantizer_leaves_in_fp32_is_named(no_data_checkpoint, tmp_path, capsys,
                                                      monkeypatch):
    import relief_export.int8 as int8

    real = int8.quantize

    def skipping_first_layer(model, samples, method="minmax", keep_fp32=(), reduce_range=False):
        first = next(n.name for n in model.graph.node if n.op_type == "Gemm")
        return real(model, samples, method, {*keep_fp32, first}, reduce_range)

    monkeypatch.setattr(int8, "quantize", skipping_first_layer)
    out = tmp_path / "q.onnx"
    code, _, err = run_cli([no_data_checkpoint, "--out", out, "--int8", "--calib-synthetic",
                            "--int8-layers", "all"], capsys)
    assert code == 2 and not out.exists()
    assert "onnxruntime.quantization leaves 1 node(s) with weights in fp32: node_" in err
    assert "(Gemm)" in err


def test_synthetic_calibration_is_said(no_data_checkpoint, tmp_path, capsys):
    out, report = tmp_path / "q.onnx", tmp_path / "r.json"
    code, stdout, err = run_cli([no_data_checkpoint, "--out", out, "--int8",
                                 "--calib-synthetic", "--calib-method", "minmax",
                                 "--accept-accuracy-drop", "100", "--report", report], capsys)
    assert code == 0, err
    int8 = json.loads(report.read_text())["int8"]
    assert int8["calibration"] == "256 synthetic N(0,1) samples (--calib-synthetic)"
    assert int8["check"]["fp32_accuracy"] is None and int8["check"]["samples"] == 500
    assert list(int8["method_agreement"]) == ["minmax"]
    assert "synthetic" in stdout


@pytest.mark.slow
def test_bench_adds_the_dense_int8_row(trained_lenet, tmp_path, capsys):
    ours, dense, dense_int8 = tmp_path / "o.onnx", tmp_path / "d.onnx", tmp_path / "d8.onnx"
    assert run_cli([trained_lenet, "--out", ours, "--dense-out", dense], capsys)[0] == 0
    common = ["--batch", "4", "--repeats", "2", "--no-memory"]
    code, _, err = run_cli(["bench", dense, ours, "--int8-baseline", dense_int8, *common],
                           capsys)
    assert code == 2 and "--int8-baseline needs --data SPEC" in err and not dense_int8.exists()
    code, _, err = run_cli(["bench", ours, dense, "--int8-baseline", dense_int8, "--data",
                            "mnist5k", *common], capsys)
    assert code == 2 and "its weights are encoded" in err and not dense_int8.exists()
    json_path = tmp_path / "b.json"
    code, stdout, err = run_cli(["bench", dense, ours, "--int8-baseline", dense_int8, "--data",
                                 "mnist5k", "--json-out", json_path, *common], capsys)
    assert code == 0, err
    models_info = json.loads(json_path.read_text())["models"]
    assert [m["path"] for m in models_info] == [str(dense), str(ours), str(dense_int8)]
    assert [m["precision"] for m in models_info] == ["fp32", "fp32", "int8"]
    assert models_info[2]["parameters"] == models_info[0]["parameters"]
    assert abs(models_info[2]["accuracy"] - models_info[0]["accuracy"]) <= 0.01
    assert f"wrote {dense_int8}" in stdout
