"""Every API argument and option is checked at the boundary with a message naming it."""

import re
import signal
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort
import pytest
import torch

import relief_export as rx
from relief_export import models
from relief_export.cli import main
from relief_export.errors import ReliefError
from relief_export.prune import FitConfig

ARCH = {"name": "lenet300_100", "kwargs": {}}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("boundaries")
    rx.save_checkpoint(folder / "m.pt", models.build("lenet300_100"), arch=ARCH,
                       input_shape=[1, 1, 28, 28])
    rx.export_onnx(folder / "m.pt", folder / "m.onnx", verify_outputs=False)
    return folder


@pytest.mark.parametrize("call, message", [
    (lambda f: rx.export_onnx(f / "m.pt", f / "x.onnx", opset="18"),
     "opset must be an integer, got '18'"),
    (lambda f: rx.export_onnx(f / "m.pt", f / "x.onnx", opset=99), r"opset must be in \[17, "),
    (lambda f: rx.export_onnx(f / "m.pt", f / "x.onnx", align=True),
     "align must be an integer"),
    (lambda f: rx.export_onnx(f / "m.pt", f / "x.onnx", weights="zip"),
     "weights must be one of auto"),
    (lambda f: rx.export_onnx(3, f / "x.onnx"), "model_or_path must be an nn.Module or a file"),
    (lambda f: rx.export_onnx(f / "m.pt", f / "x.onnx", input_shape=[10**9, 1, 28, 28]),
     "needs .* GiB"),
    (lambda f: rx.compact(str(f / "m.pt"), torch.rand(1, 1, 28, 28)),
     "model must be a torch nn.Module, got str; load a file with relief_export.load_model"),
    (lambda f: rx.compact(models.build("lenet300_100"), torch.full((1, 1, 28, 28), float("nan"))),
     "example_inputs holds NaN"),
    (lambda f: rx.benchmark([f / "m.onnx"], batch_sizes=(1.5,)),
     r"batch_sizes\[0\] must be an integer, got 1.5"),
    (lambda f: rx.benchmark([f / "m.onnx"], batch_sizes=(10**9,)), r"batch_sizes\[0\] must be"),
    (lambda f: rx.benchmark(str(f / "m.onnx")), "paths must be a non-empty list"),
    (lambda f: rx.load_model(f / "m.pt", trust="yes"), "trust must be True or False"),
    (lambda f: rx.relief_step("m.pt", torch.rand(2, 1, 28, 28)),
     "model must be a torch nn.Module"),
    (lambda f: models.build("lenet5", num_classes=10**12), r"num_classes must be in \[1, "),
    (lambda f: FitConfig(device="bogus"), "device must be cpu or cuda"),
    (lambda f: FitConfig(epochs=2.5), "epochs must be an integer"),
])
def test_api_arguments(files, call, message):
    with pytest.raises(ReliefError, match=message):
        call(files)


@pytest.mark.parametrize("args, message", [
    (["{f}/m.pt", "--out", "{f}/x.onnx", "--opset", "99"], "opset must be in"),
    (["{f}/m.pt", "--out", "{f}/x.onnx", "--input-shape", "1000000000,1,28,28"], "GiB"),
    (["{f}/m.pt", "--out", "{f}/m.pt"], "is the input model"),
    (["{f}/m.pt", "--out", "{f}/x.onnx", "--report", "{f}/m.pt"], "is the input model"),
    (["bench", "{f}/m.onnx", "--json-out", "{f}/m.onnx"], "is the input model"),
    (["bench", "{f}/m.onnx", "--plot", "{f}/m.onnx"], "is the input model"),
    (["bench", "{f}/m.onnx", "--batch", "1000000000"], "batch_sizes"),
    (["prune", "{f}/m.pt", "--data", "synthetic", "--out", "{f}/m.pt"], "is the input model"),
    (["train", "--arch", "lenet5", "--data", "synthetic", "--device", "bogus", "--out",
      "{f}/t.pt"], "device must be cpu or cuda"),
    (["{f}/m.onnx", "--out", "{f}/x.onnx", "--arch", "lenet5"], "--arch applies to state_dict"),
])
def test_cli_options(files, args, message, capsys):
    before = {p.name: p.read_bytes() for p in files.iterdir()}
    code = main([a.replace("{f}", str(files)) for a in args])
    err = capsys.readouterr().err
    assert code == 2 and re.search(message, err), err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in files.iterdir()} == before


def test_a_failed_second_output_leaves_no_first_output(files, tmp_path, capsys):
    """--report cannot be written (its folder is a file): --out must not appear either."""
    (tmp_path / "blocker").write_text("a file where a folder should be")
    code = main([str(files / "m.pt"), "--out", str(tmp_path / "x.onnx"), "--report",
                 str(tmp_path / "blocker" / "r.json")])
    assert code == 2 and "does not exist" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]


def test_a_model_with_every_hidden_unit_pruned_exports_with_a_dynamic_batch(tmp_path):
    model = models.build("lenet300_100")
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.zero_()
        model[5].bias.uniform_()
    rx.save_checkpoint(tmp_path / "dead.pt", model, arch=ARCH, input_shape=[1, 1, 28, 28])
    report = rx.export_onnx(tmp_path / "dead.pt", tmp_path / "dead.onnx")
    session = ort.InferenceSession(str(tmp_path / "dead.onnx"))
    assert session.get_inputs()[0].shape[0] == "batch"
    got = session.run(None, {"input": np.zeros((5, 1, 28, 28), np.float32)})[0]
    assert got.shape == (5, 10) and report.max_relative_error <= 1e-5
    assert np.allclose(got, model[5].bias.detach().numpy(), atol=1e-6)


def test_the_cli_starts_without_torch():
    probe = subprocess.run([sys.executable, "-c", "import sys, relief_export.cli; "
                            "print('torch' in sys.modules)"], capture_output=True, text=True,
                           check=True)
    assert probe.stdout.strip() == "False"


def _interruptible() -> None:
    """A shell's background job inherits SIGINT ignored; the child must see Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_sigint_during_a_run_is_one_line(tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "relief_export", "train", "--arch",
                                "lenet5", "--data", "synthetic", "--epochs", "50", "--out",
                                str(tmp_path / "t.pt")], stderr=subprocess.PIPE, text=True,
                               preexec_fn=_interruptible)
    time.sleep(6)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == \
        "relief-export: error: interrupted"
    assert sorted(p.name for p in tmp_path.iterdir()) == []
