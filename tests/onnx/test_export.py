import json
import pickle

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import torch
import torch.nn.functional as F
from onnx.reference import ReferenceEvaluator
from torch import nn
from torch.nn.utils import prune

from relief_export import models, save_checkpoint
from relief_export.compile import compact
from relief_export.onnx.compat import max_ir_version
from relief_export.onnx.emit import to_onnx
from relief_export.onnx.formats import MODES
from relief_export.onnx.passes import EncodeWeights
from relief_export.pipeline import export_onnx
from relief_export.runtime.ort import session

from ..compile.masking import random_masks
from ..helpers import outputs, run_cli, zoo_params


@pytest.mark.parametrize("name", zoo_params())
def test_zoo_models_through_every_encoding(name):
    torch.manual_seed(0)
    model = models.build(name).eval()
    random_masks(model, 7, unit_rate=0.2, connection_rate=0.8)
    shape = models.input_shape(name)
    compacted = compact(model, torch.rand(shape), fold_batchnorm=True)
    exported = ir.to_proto(to_onnx(compacted, torch.rand(shape)))
    x = torch.rand((2, *shape[1:]), generator=torch.Generator().manual_seed(1))
    expected = outputs(model, x).numpy()
    for mode in MODES:
        encoded = ir.from_proto(exported)
        EncodeWeights(MODES[mode])(encoded)
        got = session(ir.to_proto(encoded).SerializeToString()).run(
            None, {"input": x.numpy()})[0]
        error = np.abs(got - expected).max() / np.abs(expected).max()
        assert error <= 1e-4, (mode, error)


def pruned_lenet_checkpoint(path):
    torch.manual_seed(0)
    model = models.build("lenet300_100")
    prune.l1_unstructured(model[1], "weight", amount=0.95)
    prune.l1_unstructured(model[3], "weight", amount=0.9)
    return save_checkpoint(path, model, arch={"name": "lenet300_100", "kwargs": {}},
                           input_shape=[1, 1, 28, 28], data="mnist5k"), model


def test_export_api_writes_a_verified_compact_file(tmp_path):
    checkpoint, model = pruned_lenet_checkpoint(tmp_path / "m.pt")
    before = checkpoint.read_bytes()
    report = export_onnx(checkpoint, tmp_path / "m.onnx", dense_out=tmp_path / "dense.onnx",
                         report_path=tmp_path / "r.json")
    assert checkpoint.read_bytes() == before
    proto = onnx.load(tmp_path / "m.onnx")
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["output"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    assert proto.ir_version <= max_ir_version()
    assert proto.opset_import[0].version >= 17
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["producer"].startswith("relief_export") and meta["params_dense"] == "266610"
    assert json.loads(meta["weight_formats"])
    x = torch.rand(3, 1, 28, 28)
    expected = outputs(model, x).numpy()
    got = session((tmp_path / "m.onnx").read_bytes()).run(None, {"input": x.numpy()})[0]
    assert np.abs(got - expected).max() < 1e-4
    # the ONNX reference implementation (decoders included) agrees as well
    reference = ReferenceEvaluator(proto).run(None, {"input": x.numpy()})[0]
    assert np.abs(reference - expected).max() < 1e-4
    assert report.file_bytes == (tmp_path / "m.onnx").stat().st_size
    assert report.dense_file_bytes == (tmp_path / "dense.onnx").stat().st_size
    assert report.file_bytes < report.dense_file_bytes / 3
    assert any("mnist5k" in c["inputs"] for c in report.verification)  # real digits checked
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["file_bytes"] == report.file_bytes and saved["max_relative_error"] <= 1e-4


def test_fp16_weights_halve_the_values_and_report_the_effect(tmp_path):
    checkpoint, _ = pruned_lenet_checkpoint(tmp_path / "m.pt")
    full = export_onnx(checkpoint, tmp_path / "a.onnx")
    half = export_onnx(checkpoint, tmp_path / "b.onnx", fp16_weights=True)
    assert half.file_bytes < 0.7 * full.file_bytes
    assert 0 < half.fp16_error_vs_fp32 < 1e-2


def test_cli_on_train_then_prune_checkpoints(tmp_path, capsys):
    spec = "synthetic:1,28,28,4"
    dense, pruned = tmp_path / "dense.pt", tmp_path / "pruned.pt"
    assert run_cli(["train", "--arch", "lenet300_100", "--data", spec, "--epochs", "1",
                    "--out", dense], capsys)[0] == 0
    assert run_cli(["prune", dense, "--data", spec, "--iterations", "2", "--epochs", "1",
                    "--calib-samples", "100", "--out", pruned], capsys)[0] == 0
    code, out, err = run_cli([pruned, "--out", tmp_path / "m.onnx", "--weights", "csr",
                              "--verbose"], capsys)
    assert code == 0, err
    assert "bytes per nonzero weight" in out and "tensor" in out
    assert (tmp_path / "m.onnx").stat().st_size > 0


class HandWritten(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(torch.flatten(F.max_pool2d(F.relu(self.conv(x)), 2), 1))


def test_cli_on_a_torch_export_archive(tmp_path, capsys):
    torch.manual_seed(0)
    model = HandWritten().eval()
    with torch.no_grad():
        model.conv.weight[1] = 0
        model.fc.weight[:, :20] = 0
    torch.export.save(torch.export.export(model, (torch.rand(1, 1, 8, 8),)), tmp_path / "m.pt2")
    code, _out, err = run_cli([tmp_path / "m.pt2", "--out", tmp_path / "m.onnx"], capsys)
    assert code == 0, err
    x = torch.rand(2, 1, 8, 8)
    got = session((tmp_path / "m.onnx").read_bytes()).run(None, {"input": x.numpy()})[0]
    assert np.abs(got - outputs(model, x).numpy()).max() < 1e-4


def test_cli_on_a_trusted_pickle_masked_with_torch_prune(tmp_path, capsys):
    torch.manual_seed(0)
    model = HandWritten().eval()
    prune.ln_structured(model.conv, "weight", amount=0.5, n=1, dim=0)
    prune.l1_unstructured(model.fc, "weight", amount=0.8)
    torch.save(model, tmp_path / "whole.pt")
    args = [tmp_path / "whole.pt", "--out", tmp_path / "m.onnx", "--input-shape", "1,1,8,8"]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "--trust-pickle" in err and not (tmp_path / "m.onnx").exists()
    code, _, err = run_cli([*args, "--trust-pickle"], capsys)
    assert code == 0, err
    x = torch.rand(2, 1, 8, 8)
    got = session((tmp_path / "m.onnx").read_bytes()).run(None, {"input": x.numpy()})[0]
    assert np.abs(got - outputs(model, x).numpy()).max() < 1e-4


def test_cli_bad_inputs(tmp_path, capsys):
    checkpoint, _ = pruned_lenet_checkpoint(tmp_path / "m.pt")
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes(checkpoint.read_bytes()[:1000])
    zoo_less = tmp_path / "alien.pt"
    payload = torch.load(checkpoint, weights_only=True)
    torch.save({**payload, "arch": {"name": "alexnet", "kwargs": {}}}, zoo_less)
    factory = tmp_path / "factory.pt"
    torch.save({**payload, "arch": {"factory": "tests.helpers:tiny_mlp", "kwargs": {}}},
               factory)
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked").chmod(0o500)
    cases = [
        ([truncated], "corrupt or truncated"),
        ([zoo_less], "not in the model zoo"),
        ([factory], "--allow-factory"),
        ([checkpoint, "--input-shape", "1,3,32,32"], "does not fit"),
        ([checkpoint, "--out", tmp_path / "missing" / "x.onnx"], "does not exist"),
        ([checkpoint, "--out", checkpoint], "is the input model"),
        ([tmp_path / "absent.pt"], "no such file"),
    ]
    if not _root():
        cases.append(([checkpoint, "--out", tmp_path / "locked" / "x.onnx"], "not writable"))
    before = {p: p.read_bytes() for p in (checkpoint, truncated, zoo_less, factory)}
    for args, message in cases:
        full = [*args] if "--out" in map(str, args) else [*args, "--out", tmp_path / "x.onnx"]
        code, _, err = run_cli(full, capsys)
        assert code == 2 and message in err and err.count("\n") == 1, (args, err)
    assert not (tmp_path / "x.onnx").exists()
    assert all(p.read_bytes() == content for p, content in before.items())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files


def _root() -> bool:
    import os

    return os.geteuid() == 0


def test_a_failed_verification_exits_1_and_keeps_the_old_file(tmp_path, capsys, monkeypatch):
    checkpoint, _ = pruned_lenet_checkpoint(tmp_path / "m.pt")
    out = tmp_path / "m.onnx"
    out.write_bytes(b"old")
    import relief_export.pipeline.export as pipeline

    class Corrupting(EncodeWeights):
        """Encodes, then adds 1 to one stored array: the file must fail verification."""

        def call(self, model):
            result = super().call(model)
            value = next(v for name, v in model.graph.initializers.items() if "__values" in name)
            value.const_value = ir.tensor(value.const_value.numpy() + 1.0, name=value.name)
            return result

    monkeypatch.setattr(pipeline, "EncodeWeights", Corrupting)
    code, _, err = run_cli([checkpoint, "--out", out], capsys)
    assert code == 1 and "disagrees with torch" in err and "max |error|" in err
    assert out.read_bytes() == b"old"


def test_pickle_that_runs_code_is_refused_without_side_effects(tmp_path, capsys):
    marker = tmp_path / "created"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with open(tmp_path / "evil.pt", "wb") as handle:
        pickle.dump(Evil(), handle)
    code, _, _err = run_cli([tmp_path / "evil.pt", "--out", tmp_path / "x.onnx"], capsys)
    assert code == 2 and not marker.exists() and not (tmp_path / "x.onnx").exists()
