"""Every input users already have: ONNX files, state_dicts with their class, .pt2 archives
saved with live prune hooks; and the export's account of what it left (--strict)."""

import warnings

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
import torch.nn.utils.prune as prune
from torch import nn

import relief_export as rx
from relief_export import models
from relief_export.bench.masks import relief_like_masks
from relief_export.graph.masks import effective_state_dict
from relief_export.inputs import read_model
from relief_export.inputs.onnx_graph import read_onnx
from relief_export.inputs.onnx_ops import ONNX_OPS
from relief_export.runtime.ort import session

from .helpers import run_cli


def _onnx_export(model: nn.Module, shape: list[int], path, dynamo: bool) -> None:
    x = torch.randn(shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(model, (x,), str(path), dynamo=True, external_data=False,
                              dynamic_shapes=({0: torch.export.Dim("batch")},))
        else:
            torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["x"],
                              dynamic_axes={"x": {0: "batch"}})


def _run(path, x: np.ndarray, optimize: bool = True) -> np.ndarray:
    runtime = session(str(path), optimize=optimize)
    return runtime.run(None, {runtime.get_inputs()[0].name: x})[0]


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(a).max())


def _masked(arch: str) -> nn.Module:
    model = models.build(arch).eval()
    relief_like_masks(model, seed=0)
    return model


@pytest.mark.parametrize(("arch", "shape", "dynamo"), [
    ("lenet5", [1, 1, 28, 28], False), ("lenet5", [1, 1, 28, 28], True),
    ("resnet20", [1, 3, 32, 32], False)])
def test_onnx_in_compacts_like_the_module_route(tmp_path, arch, shape, dynamo):
    model = _masked(arch)
    source = tmp_path / "in.onnx"
    _onnx_export(model, shape, source, dynamo)
    before = source.read_bytes()
    report = rx.export_onnx(source, tmp_path / "out.onnx")
    module_route = rx.export_onnx(model, tmp_path / "module.onnx",
                                  example_inputs=torch.randn(shape))
    assert source.read_bytes() == before
    # residual gates (x * gate.view(1, -1, 1, 1)) and everything else is modelled: nothing left
    assert module_route.compaction["uncompacted"] == report.compaction["uncompacted"] == []
    # torch's exporters fold BatchNorm into convs and drop some all-zero tensors themselves
    assert report.params_compact <= module_route.params_compact < report.params_dense
    assert report.params_nonzero <= module_route.params_nonzero
    if not dynamo:
        assert report.params_compact == module_route.params_compact
    x = torch.randn([5, *shape[1:]], generator=torch.Generator().manual_seed(3)).numpy()
    assert _relative(_run(source, x), _run(tmp_path / "out.onnx", x)) <= 1e-4
    assert report.file_bytes < source.stat().st_size / 3


class _EveryOp(nn.Module):
    """One model whose ONNX export uses every op the converter knows."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(16, 8, 3, stride=2, padding=1, groups=2)
        self.fc = nn.Linear(8 * 5 * 5, 12)
        self.tokens = nn.Linear(4, 6)
        self.out = nn.Linear(12 + 6 * 8, 5)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.running_var.uniform_(0.5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn(self.conv(x)))
        h = torch.cat([torch.sigmoid(h) * h, F.relu6(h) - torch.tanh(h) / 2], 1)
        h = F.max_pool2d(F.pad(self.conv2(h), (1, 1, 1, 1)), 2)
        h = F.hardswish(F.leaky_relu(F.avg_pool2d(h, 1), 0.1))
        g = F.gelu(h[:, :, ::2, ::2].mean((2, 3), keepdim=True))
        flat = self.fc(torch.flatten(h, 1)) + g.reshape(g.shape[0], -1).sum(1, keepdim=True)
        tokens = self.tokens(h.reshape(h.shape[0], 8, -1)[:, :, :4])
        joined = torch.cat([flat, tokens.reshape(tokens.shape[0], -1)], 1)
        return F.softmax(self.out(F.dropout(joined, 0.5, False)), -1) + \
            F.adaptive_avg_pool2d(h, 1).flatten(1)[:, :5]


@pytest.mark.parametrize("dynamo", [False, True])
def test_every_converter_op_against_onnxruntime(tmp_path, dynamo):
    model = _EveryOp().eval()
    source = tmp_path / "ops.onnx"
    _onnx_export(model, [1, 3, 16, 16], source, dynamo)
    loaded = rx.load_model(source)
    for batch in (1, 4):
        x = torch.randn(batch, 3, 16, 16, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            got = loaded(x).numpy()
        assert _relative(_run(source, x.numpy(), optimize=False), got) <= 1e-5
        with torch.no_grad():
            assert _relative(model(x).numpy(), got) <= 1e-5


def _init(name: str, values) -> onnx.TensorProto:
    array = np.asarray(values)
    return onnx.numpy_helper.from_array(array.astype(np.int64 if array.dtype.kind == "i"
                                                     else np.float32), name)


_RNG = np.random.default_rng(0)
_W = {"w_conv": _RNG.standard_normal((4, 3, 3, 3)), "b4": _RNG.standard_normal(4),
      "b6": _RNG.standard_normal(6),
      "w_gemm": _RNG.standard_normal((5, 48)), "b5": _RNG.standard_normal(5),
      "w_mat": _RNG.standard_normal((4, 6)), "scale": _RNG.uniform(0.5, 2, 3),
      "shift": _RNG.standard_normal(3), "mean": _RNG.standard_normal(3),
      "var": _RNG.uniform(0.5, 2, 3), "half": [0.5], "ln_scale": _RNG.uniform(0.5, 2, 4),
      "ln_shift": _RNG.standard_normal(4), "two": [2.0]}
# op -> (nodes on input "x" [2, 3, 4, 4] ending in "y", initializers used, extra attributes)
_OP_GRAPHS = {
    "Conv": ([("Conv", ["x", "w_conv", "b4"], {"pads": [1, 0, 1, 2], "strides": [1, 2]})], {}),
    "Gemm": ([("Flatten", ["x"], {}), ("Gemm", ["f", "w_gemm", "b5"],
                                      {"transB": 1, "alpha": 0.5, "beta": 2.0})], {}),
    "MatMul": ([("MatMul", ["x", "w_mat"], {})], {}),
    "BatchNormalization": ([("BatchNormalization", ["x", "scale", "shift", "mean", "var"],
                             {"epsilon": 1e-3})], {}),
    "Add": ([("MatMul", ["x", "w_mat"], {}), ("Add", ["f", "b6"], {})], {}),
    "Sub": ([("Sub", ["x", "half"], {})], {}), "Mul": ([("Mul", ["x", "x"], {})], {}),
    "Div": ([("Div", ["x", "half"], {})], {}), "Relu": ([("Relu", ["x"], {})], {}),
    "Sigmoid": ([("Sigmoid", ["x"], {})], {}), "Tanh": ([("Tanh", ["x"], {})], {}),
    "HardSwish": ([("HardSwish", ["x"], {})], {}),
    "Clip": ([("Clip", ["x", "zero", "six"], {})], {}),
    "LeakyRelu": ([("LeakyRelu", ["x"], {"alpha": 0.2})], {}),
    "Gelu": ([("Gelu", ["x"], {"approximate": "tanh"})], {}),
    "MaxPool": ([("MaxPool", ["x"], {"kernel_shape": [2, 2], "pads": [1, 1, 1, 1],
                                     "strides": [2, 2]})], {}),
    "AveragePool": ([("AveragePool", ["x"], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1],
                                             "count_include_pad": 1})], {}),
    "GlobalAveragePool": ([("GlobalAveragePool", ["x"], {})], {}),
    "GlobalMaxPool": ([("GlobalMaxPool", ["x"], {})], {}),
    "Flatten": ([("Flatten", ["x"], {"axis": 2})], {}),
    "Reshape": ([("Reshape", ["x", "shape"], {})], {}),
    "Concat": ([("Concat", ["x", "x"], {"axis": 1})], {}),
    "Pad": ([("Pad", ["x", "pads", "half"], {"mode": "constant"})], {}),
    "ReduceMean": ([("ReduceMean", ["x", "axes"], {"keepdims": 0})], {}),
    "ReduceSum": ([("ReduceSum", ["x", "axes"], {"keepdims": 1})], {}),
    "ReduceMax": ([("ReduceMax", ["x", "axes"], {"keepdims": 1})], {}),
    "Softmax": ([("Softmax", ["x"], {"axis": 1})], {}),
    "Slice": ([("Slice", ["x", "starts", "ends", "axes", "steps"], {})], {}),
    "Transpose": ([("Transpose", ["x"], {"perm": [0, 2, 3, 1]})], {}),
    "Squeeze": ([("ReduceMean", ["x", "axes"], {"keepdims": 1}),
                 ("Squeeze", ["f", "axes"], {})], {}),
    "Unsqueeze": ([("Unsqueeze", ["x", "axes"], {})], {}),
    "Identity": ([("Identity", ["x"], {})], {}), "Dropout": ([("Dropout", ["x"], {})], {}),
    "Gather": ([("Gather", ["x", "picks"], {"axis": 1})], {}),
    "Cast": ([("Cast", ["x"], {"to": 6}), ("Cast", ["f"], {"to": 1})], {}),
    "LayerNormalization": ([("LayerNormalization", ["x", "ln_scale", "ln_shift"],
                             {"axis": -1, "epsilon": 1e-3})], {}),
    "Expand": ([("ReduceMean", ["x", "axes"], {"keepdims": 1}),
                ("Expand", ["f", "wide"], {})], {}),
    "Erf": ([("Erf", ["x"], {})], {}), "Neg": ([("Neg", ["x"], {})], {}),
    "Exp": ([("Exp", ["x"], {})], {}),
    "Sqrt": ([("Mul", ["x", "x"], {}), ("Sqrt", ["f"], {})], {}),
    "Pow": ([("Pow", ["x", "two"], {})], {}),
    "Max": ([("Max", ["x", "half", "zero"], {})], {}), "Min": ([("Min", ["x", "half"], {})], {}),
    "Equal": ([("Equal", ["x", "x"], {}), ("Cast", ["f"], {"to": 1})], {}),
    "Not": ([("Equal", ["x", "x"], {}), ("Not", ["f"], {}), ("Cast", ["f"], {"to": 1})], {}),
    "Where": ([("Relu", ["x"], {}), ("Equal", ["f", "x"], {}),
               ("Where", ["f", "x", "half"], {})], {}),
}
_CONSTANTS = {"zero": 0.0, "six": 6.0, "shape": [0, 3, -1], "pads": [0, 1, 0, 2, 0, 0, 1, 1],
              "axes": [2, 3], "starts": [0, 1], "ends": [9, -1], "steps": [2, 1],
              "picks": [2, -3], "wide": [1, 3, 4, 4]}


def _op_model(op: str) -> onnx.ModelProto:
    from onnx import TensorProto, helper

    steps, shapes = _OP_GRAPHS[op]
    nodes, names = [], []
    for index, (op_type, inputs, attributes) in enumerate(steps):  # "f": the step before's
        inputs = [(f"f{index - 1}" if index else "x") if name == "f" else name
                  for name in inputs]
        output = "y" if index == len(steps) - 1 else f"f{index}"
        nodes.append(helper.make_node(op_type, inputs, [output], name=f"{op_type}_{index}",
                                      **attributes))
        names += inputs
    initializers = []
    for name in dict.fromkeys(names):
        if name in _W:
            values = np.asarray(_W[name])
            initializers.append(_init(name, values.reshape(shapes[name]) if name in shapes
                                      else values))
        elif name in _CONSTANTS:
            values = _CONSTANTS[name]
            initializers.append(_init(name, np.asarray(values, dtype=np.float32)
                                      if isinstance(values, float) else np.asarray(values)))
    graph = helper.make_graph(nodes, op, [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["batch", 3, 4, 4])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, None)], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=9)


def test_every_op_in_the_table_has_its_graph():
    assert set(_OP_GRAPHS) == set(ONNX_OPS)


@pytest.mark.parametrize("op", sorted(_OP_GRAPHS))
def test_each_onnx_op_against_the_reference(tmp_path, op):
    """One small graph per table entry: the converted module against onnx.reference (the ONNX
    semantics) and onnxruntime, at two batch sizes."""
    from onnx.reference import ReferenceEvaluator

    model = _op_model(op)
    path = tmp_path / f"{op}.onnx"
    onnx.save(model, str(path))
    converted = rx.load_model(path)
    reference = ReferenceEvaluator(model)
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 4, 4)).astype(np.float32)
        expected = reference.run(None, {"x": x})[0]
        with torch.no_grad():
            got = converted(torch.from_numpy(x)).numpy()
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(_run(path, x, optimize=False), expected, rtol=1e-5,
                                   atol=1e-5)
    layer_ops = {"Conv": nn.Conv2d, "Gemm": nn.Linear, "MatMul": nn.Linear,
                 "Add": nn.Linear, "BatchNormalization": nn.BatchNorm2d}
    if op in layer_ops:  # layers become modules that pruning and compaction read
        assert any(isinstance(m, layer_ops[op]) for m in converted.modules())
    if op == "Add":
        assert sum(isinstance(m, nn.Linear) and m.bias is not None
                   for m in converted.modules()) == 1  # MatMul + Add became one Linear


def test_onnx_in_after_onnxslim(tmp_path):
    onnxslim = pytest.importorskip("onnxslim")
    model = _masked("lenet300_100")
    source = tmp_path / "in.onnx"
    _onnx_export(model, [1, 1, 28, 28], source, False)
    slim = tmp_path / "slim.onnx"
    onnx.save(onnxslim.slim(onnx.load(str(source))), str(slim))
    report = rx.export_onnx(slim, tmp_path / "out.onnx")
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(1)).numpy()
    assert _relative(_run(slim, x), _run(tmp_path / "out.onnx", x)) <= 1e-4
    assert report.params_compact < report.params_dense


def test_onnx_in_bad_input_names_the_node(tmp_path, capsys):
    class Sine(nn.Module):
        def forward(self, x):
            return torch.sin(x).flatten(1)

    source = tmp_path / "sine.onnx"
    _onnx_export(Sine(), [1, 4], source, False)
    out = tmp_path / "out.onnx"
    code, _, err = run_cli([source, "--out", out], capsys)
    assert code == 2 and "Sin" in err and "is not supported" in err and "node" in err
    assert not out.exists() and "Traceback" not in err

    class Masked(nn.Module):
        def forward(self, x, keep):
            return x * keep

    masked = tmp_path / "masked.onnx"
    torch.onnx.export(Masked(), (torch.randn(1, 3), torch.ones(1, 3, dtype=torch.bool)),
                      str(masked), dynamo=False, input_names=["x", "keep"])
    code, _, err = run_cli([masked, "--out", out], capsys)
    assert code == 2 and "input 'keep' must be a float32, int64 or int32 tensor" in err

    truncated = tmp_path / "cut.onnx"
    truncated.write_bytes(source.read_bytes()[:40])
    code, _, err = run_cli([truncated, "--out", out], capsys)
    assert code == 2 and "cut.onnx" in err and not out.exists()


def test_our_own_output_given_back_warns(tmp_path, capsys):
    model = _masked("lenet300_100")
    first = tmp_path / "first.onnx"
    rx.export_onnx(model, first, example_inputs=torch.randn(1, 1, 28, 28))
    code, _, err = run_cli([first, "--out", tmp_path / "again.onnx"], capsys)
    assert code == 0 and "warning:" in err and "written by relief_export" in err
    rewritten = onnx.load(str(first))  # a weight re-serialised, as a graph rewriter does
    rewritten.graph.initializer[0].doc_string = "rewritten"
    changed = tmp_path / "changed.onnx"
    onnx.save(rewritten, str(changed))
    code, _, err = run_cli([changed, "--out", tmp_path / "again2.onnx"], capsys)
    assert code == 0 and "rewritten since" in err and "before relief-export" in err


TINY_SOURCE = '''
import torch.nn.functional as F
from torch import nn

class Tiny(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width * 6 * 6, 4)

    def forward(self, x):
        return self.fc(F.relu(self.bn(self.conv(x))).flatten(1))
'''


_NAMESPACE: dict = {}
exec(TINY_SOURCE, _NAMESPACE)  # the same class the state_dict test imports from a file
_Tiny = _NAMESPACE["Tiny"]


def _hooked_tiny(width: int = 12) -> nn.Module:
    torch.manual_seed(0)
    model = _Tiny(width).eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.bias.uniform_(-1, 1)
    prune.ln_structured(model.conv, "weight", 0.5, n=1, dim=0)
    prune.l1_unstructured(model.fc, "weight", 0.8)
    return model


def test_state_dict_with_its_class_from_the_current_folder(tmp_path, capsys, monkeypatch):
    (tmp_path / "tinymod.py").write_text(TINY_SOURCE)
    model = _hooked_tiny()
    weights = tmp_path / "weights.pt"
    torch.save(model.state_dict(), weights)  # weight_orig / weight_mask keys
    assert any(k.endswith("weight_mask") for k in model.state_dict())
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "tiny.onnx"
    common = [weights, "--out", out, "--input-shape", "1,1,8,8"]

    code, _, err = run_cli(common, capsys)
    assert code == 2 and "a state_dict" in err and "--arch" in err
    code, _, err = run_cli([*common, "--arch", "tinymod:Tiny"], capsys)
    assert code == 2 and "--allow-factory" in err and not out.exists()
    code, _, err = run_cli([*common, "--arch", "tinymod:Tiny", "--allow-factory"], capsys)
    assert code == 2 and "size mismatch for conv.weight" in err
    with pytest.raises(SystemExit) as exit_info:
        run_cli([*common, "--arch", "tinymod:Tiny", "--arch-kwargs", "[1]"], capsys)
    assert exit_info.value.code == 2 and "JSON object" in capsys.readouterr().err
    code, _, err = run_cli([*common, "--arch", "missing_mod:Tiny", "--allow-factory"], capsys)
    assert code == 2 and "'missing_mod'" in err and "PYTHONPATH" in err

    code, out_text, err = run_cli([*common, "--arch", "tinymod:Tiny", "--arch-kwargs",
                                   '{"width": 12}', "--allow-factory"], capsys)
    assert code == 0, err
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x).numpy()
    assert _relative(expected, _run(out, x.numpy())) <= 1e-5
    nonzero = sum(int(torch.count_nonzero(t)) for k, t in
                  [("conv", model.conv.weight), ("fc", model.fc.weight)]) + 12 + 4 + 24
    assert f"{nonzero:,}" in out_text  # weights + conv/fc biases + BatchNorm scale/shift


def test_state_dict_of_a_zoo_model(tmp_path, capsys):
    model = _masked("lenet5")
    weights = tmp_path / "lenet5.pt"
    torch.save({"state_dict": effective_state_dict(model)}, weights)
    out = tmp_path / "l5.onnx"
    code, _, err = run_cli([weights, "--arch", "lenet5", "--out", out, "--input-shape",
                            "1,1,28,28"], capsys)
    assert code == 0, err
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert _relative(model(x).numpy(), _run(out, x.numpy())) <= 1e-5
    code, _, err = run_cli([weights, "--arch", "no_such_arch", "--out", out], capsys)
    assert code == 2 and "not in the model zoo" in err


def test_pt2_with_prune_hooks_and_batch_norm_is_compacted(tmp_path):
    model = _hooked_tiny(12)
    archive = tmp_path / "hooked.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(2, 1, 8, 8),)), str(archive))
    report = rx.export_onnx(archive, tmp_path / "hooked.onnx", align=1)
    module_route = rx.export_onnx(model, tmp_path / "module.onnx", align=1,
                                  example_inputs=torch.randn(1, 1, 8, 8))
    assert report.params_nonzero == module_route.params_nonzero
    assert report.params_dense == module_route.params_dense == 12 * 9 + 12 + 24 + 12 * 36 * 4 + 4
    assert report.params_compact == module_route.params_compact
    conv = next(c for c in report.compaction["layers"] if c["shape_before"][0] == 12)
    assert conv["shape_after"][0] == 6  # the 6 pruned filters went (their BN shift folded)
    assert report.compaction["uncompacted"] == [] and report.compaction["dead_units_kept"] == 0
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert _relative(model(x).numpy(), _run(tmp_path / "hooked.onnx", x.numpy())) <= 1e-5


class _Unknown(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, 8), nn.Linear(8, 3)
        with torch.no_grad():
            self.a.weight[:3] = 0

    def forward(self, x):
        return self.b(torch.special.erf(torch.relu(self.a(x))))


def test_summary_lists_what_was_left_and_strict_fails(tmp_path, capsys):
    torch.save(_Unknown().eval(), tmp_path / "m.pt")
    out = tmp_path / "m.onnx"
    args = [tmp_path / "m.pt", "--trust-pickle", "--input-shape", "2,6", "--align", "1",
            "--out", out]
    code, text, err = run_cli(args, capsys)
    assert code == 0, err
    assert "left uncompacted: unsupported call_function special_erf" in text
    assert "dead units kept (--strict fails on them)  3" in text
    out.unlink()
    code, _, err = run_cli([*args, "--strict"], capsys)
    assert code == 1 and "--strict: 3 dead unit(s) kept" in err and "special_erf" in err
    assert not out.exists()
    code, text, err = run_cli([*args, "--verbose"], capsys)
    assert code == 0 and "kept 3 constant unit(s): left uncompacted around" in text


def test_trusted_pickle_imports_from_the_current_folder(tmp_path, capsys, monkeypatch):
    """torch.save(model) of a class defined beside the user: loads from that folder with
    --trust-pickle, as `python -m` would; elsewhere the message says how to fix it."""
    import subprocess
    import sys

    (tmp_path / "pickled_tiny.py").write_text(TINY_SOURCE)
    subprocess.run([sys.executable, "-c", "import torch, pickled_tiny; "
                    "torch.save(pickled_tiny.Tiny(4).eval(), 'whole.pt')"],
                   cwd=tmp_path, check=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    args = [tmp_path / "whole.pt", "--trust-pickle", "--input-shape", "1,1,8,8", "--out"]
    monkeypatch.chdir(elsewhere)
    code, _, err = run_cli([*args, elsewhere / "a.onnx"], capsys)
    assert code == 2 and "'pickled_tiny'" in err and "run from the folder" in err
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli([*args, tmp_path / "a.onnx"], capsys)
    assert code == 0, err
    assert (tmp_path / "a.onnx").stat().st_size > 0


class _PaddedDepthwise(nn.Module):
    """A dead unit's constant, zero-padded on its spatial axes (TF-style SAME padding, as in
    MobileNet ports), then read by a depthwise conv: not a constant any more at the border."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.bn = nn.Conv2d(3, 8, 1, bias=False), nn.BatchNorm2d(8)
        self.d, self.b = nn.Conv2d(8, 8, 3, stride=2, groups=8), nn.Conv2d(8, 4, 1)
        with torch.no_grad():
            self.a.weight[:3] = 0
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.bias.uniform_(0.5, 1)  # dead units emit relu6(shift) > 0

    def forward(self, x):
        h = F.pad(F.relu6(self.bn(self.a(x))), (0, 1, 0, 1))
        return self.b(F.relu6(self.d(h)))


def test_spatially_padded_constants_and_bias_free_convs(tmp_path):
    """Both routes: the module (zero padding of a constant channel is not a constant) and its
    .pt2 (aten.conv2d called without a bias argument)."""
    torch.manual_seed(0)
    model = _PaddedDepthwise().eval()
    x = torch.randn(3, 3, 16, 16)
    small = rx.compact(model, x[:1], align=1)  # raised "changed the function" before
    with torch.no_grad():
        assert _relative(model(x).numpy(), small(x).numpy()) <= 1e-5
    archive = tmp_path / "padded.pt2"
    torch.export.save(torch.export.export(model, (x,)), str(archive))
    exported = rx.export_onnx(archive, tmp_path / "padded.onnx", align=1)
    assert exported.compaction["uncompacted"] == []
    assert _relative(model(x).detach().numpy(), _run(tmp_path / "padded.onnx", x.numpy())) <= 1e-5


class _TokenModel(nn.Module):
    """Token ids, an integer attention mask and a float side input; logits and a feature."""

    def __init__(self):
        super().__init__()
        self.embed, self.norm = nn.Embedding(50, 16), nn.LayerNorm(16)
        self.fc1, self.side, self.fc2 = nn.Linear(16, 32), nn.Linear(3, 32), nn.Linear(32, 4)

    def forward(self, ids, mask, extra):
        h = self.norm(self.embed(ids)) * mask.unsqueeze(-1).float()
        h = F.gelu(self.fc1(h)).sum(1) / mask.float().sum(1, keepdim=True).clamp(min=1)
        h = h + self.side(extra)
        return self.fc2(h), h[:, 0]


@pytest.mark.parametrize("dynamo", [False, True])
def test_onnx_with_several_inputs_token_ids_and_outputs(tmp_path, capsys, dynamo):
    """Three inputs (int64 ids below the table size, an int64 mask, floats) and two outputs,
    from either torch exporter: the export agrees with the source file in onnxruntime on
    every output."""
    torch.manual_seed(0)
    names = ["input_ids", "attention_mask", "extra"]
    source, out = tmp_path / "tok.onnx", tmp_path / "out.onnx"
    examples = (torch.randint(0, 50, (2, 7)), torch.ones(2, 7, dtype=torch.int64),
                torch.rand(2, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            batch = torch.export.Dim("batch")
            torch.onnx.export(_TokenModel().eval(), examples, str(source), dynamo=True,
                              external_data=False, dynamic_shapes=({0: batch},) * 3,
                              input_names=names, output_names=["logits", "feature"])
        else:
            torch.onnx.export(_TokenModel().eval(), examples, str(source), dynamo=False,
                              input_names=names, output_names=["logits", "feature"],
                              dynamic_axes={n: {0: "b"} for n in [*names, "logits", "feature"]})
    _, specs, _ = read_onnx(source)
    assert [(s.name, s.dtype, s.shape, s.high) for s in specs] == [
        ("input_ids", torch.int64, [2, 7], 50), ("attention_mask", torch.int64, [2, 7], 2),
        ("extra", torch.float32, [2, 3], 2)]
    loaded = rx.load_model(source)
    assert [x.dtype for x in read_model(source).example_inputs] == \
        [torch.int64, torch.int64, torch.float32]
    assert isinstance(loaded(*examples), tuple)
    code, _, err = run_cli([source, "--out", out], capsys)
    assert code == 0, err
    generator = torch.Generator().manual_seed(3)
    feed = {"input_ids": torch.randint(0, 50, (5, 7), generator=generator).numpy(),
            "attention_mask": torch.randint(0, 2, (5, 7), generator=generator).numpy(),
            "extra": torch.rand(5, 3, generator=generator).numpy()}
    want = session(str(source)).run(None, feed)
    got = session(str(out)).run(None, feed)
    assert len(got) == 2
    for a, b in zip(want, got, strict=True):
        assert a.shape == b.shape and _relative(a, b) <= 1e-4


def test_hand_written_attention_in_a_pt2_loses_its_dead_heads(tmp_path):
    """aten.matmul / aten.softmax.int / aten.div from torch.export: heads 1 (constant values)
    and 3 (unread) go from q, k, v and o, as in the module; same function."""
    from .channels.test_channel_ops import HandWrittenAttention, constant_head_values

    torch.manual_seed(0)
    model = HandWrittenAttention().eval()
    constant_head_values(model)
    archive = tmp_path / "attention.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(2, 5, 16),),
                                          dynamic_shapes=({0: torch.export.Dim("b")},)),
                      str(archive))
    loaded = rx.load_model(archive)
    x = torch.randn(3, 5, 16)
    small = rx.compact(loaded, x[:1], align=1)
    weights = sorted(tuple(p.shape) for name, p in small.named_parameters()
                     if name.endswith("weight"))
    assert weights == [(8, 16)] * 3 + [(16, 8)]
    with torch.no_grad():
        assert _relative(model(x).numpy(), small(x).numpy()) <= 1e-5
