import subprocess
import sys

import torch

from relief_export import read_model

from .helpers import run_cli


def test_train_writes_a_checkpoint_with_test_accuracy(tmp_path, capsys):
    out = tmp_path / "dense.pt"
    code, stdout, _ = run_cli(["train", "--arch", "lenet300_100", "--data", "synthetic",
                               "--epochs", "2", "--out", out], capsys)
    assert code == 0 and "test accuracy" in stdout
    loaded = read_model(out)
    assert loaded.arch == {"name": "lenet300_100", "kwargs": {"num_classes": 10,
                                                               "in_channels": 1}}
    assert 0.5 < loaded.metrics["test_accuracy"] <= 1.0
    assert loaded.metrics["train_config"]["epochs"] == 2
    assert loaded.input_shape == [1, 1, 28, 28] and loaded.data == "synthetic"


def test_train_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    cases = [
        (["--arch", "alexnet", "--data", "synthetic"], "unknown architecture 'alexnet'"),
        (["--arch", "lenet5", "--data", "imagenet"], "unknown data spec 'imagenet'"),
        (["--arch", "lenet300_100", "--data", "synthetic:3,32,32,10"],
         "lenet300_100 cannot take inputs of shape [1, 3, 32, 32]"),
        (["--arch", "lenet5", "--data", f"mnist:{tmp_path / 'nowhere'}"],
         "MNIST directory not found"),
    ]
    for args, message in cases:
        code, _, err = run_cli(["train", *args, "--epochs", "1", "--out", tmp_path / "m.pt"],
                               capsys)
        assert code == 2, args
        assert message in err and err.count("\n") == 1 and "Traceback" not in err
    code, _, err = run_cli(["train", "--arch", "lenet5", "--data", "synthetic", "--out",
                            tmp_path / "no" / "m.pt"], capsys)
    assert code == 2 and "does not exist" in err
    assert list(tmp_path.iterdir()) == []


def test_python_dash_m_and_version():
    result = subprocess.run([sys.executable, "-m", "relief_export", "--version"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout.startswith("relief-export 0.")


def test_argparse_errors_exit_2(capsys):
    code = None
    try:
        run_cli(["train", "--arch"], capsys)
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2
    assert "expected one argument" in capsys.readouterr().err


def test_train_then_prune_end_to_end(tmp_path, capsys):
    dense, pruned = tmp_path / "dense.pt", tmp_path / "pruned.pt"
    spec = "synthetic:1,8,8,4"
    code, _, _ = run_cli(["train", "--arch", "lenet5", "--data", spec, "--epochs", "1",
                          "--out", dense], capsys)
    assert code == 2  # lenet5 needs 28x28 inputs: a clear error, not a crash
    spec = "synthetic:1,28,28,4"
    assert run_cli(["train", "--arch", "lenet300_100", "--data", spec, "--epochs", "2",
                    "--out", dense], capsys)[0] == 0
    code, out, _ = run_cli(["prune", dense, "--data", spec, "--iterations", "2",
                            "--epochs", "1", "--calib-samples", "100", "--out", pruned], capsys)
    assert code == 0 and "weights left" in out
    loaded = read_model(pruned)
    assert [h["iteration"] for h in loaded.history] == [0, 1, 2]
    remaining = loaded.history[-1]["remaining_weights"]
    assert remaining < 1.0 and loaded.metrics["remaining_weights"] == remaining
    mask = loaded.model[1].weight_mask.bool()
    assert torch.count_nonzero(loaded.model[1].weight[~mask]) == 0
    assert not mask.all()


def test_prune_bad_inputs(tmp_path, capsys):
    dense = tmp_path / "dense.pt"
    spec = "synthetic:1,28,28,4"
    run_cli(["train", "--arch", "lenet300_100", "--data", spec, "--epochs", "1", "--out",
             dense], capsys)
    before = dense.read_bytes()
    for extra, message in [(["--alpha-fc", "1.5"], "alpha_fc must lie in (0, 1]"),
                           (["--iterations", "0"], "iterations"),
                           (["--data", "synthetic:3,32,32,4"], "do not fit")]:
        args = ["prune", dense, "--data", spec, "--out", tmp_path / "p.pt", *extra]
        code, _, err = run_cli(args, capsys)
        assert code == 2 and message in err, err
    assert dense.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dense.pt"]


def _row(text: str, label: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(label))


def test_inspect_reports_dead_units_and_compaction(tmp_path, capsys):
    from relief_export import models, save_checkpoint

    model = models.build("lenet300_100")
    with torch.no_grad():
        model[1].weight[:7] = 0  # 7 dead hidden units
        model[3].weight[:, 200:] = 0  # hidden units 200..299 unread by layer 3
    path = save_checkpoint(tmp_path / "m.pt", model, arch={"name": "lenet300_100",
                                                            "kwargs": {}},
                           input_shape=[1, 1, 28, 28])
    code, out, _ = run_cli(["inspect", path], capsys)
    assert code == 0
    first = next(line for line in out.splitlines() if line.startswith("1 "))
    assert first.split()[3] == "7"  # dead units
    third = next(line for line in out.splitlines() if line.startswith("3 "))
    assert third.split()[4] == "100"  # unread inputs
    assert "would write" in out
    # inspect shows exactly what export does: the same counts and per-tensor formats
    for align in ("8", "1"):
        code, shown, _ = run_cli(["inspect", path, "--align", align], capsys)
        code, written, _ = run_cli([path, "--out", tmp_path / f"m{align}.onnx", "--align",
                                    align, "--verbose"], capsys)
        for row in ("parameters in this file", "nonzero parameters in this file",
                    "MACs per sample in this file", "file bytes: this model",
                    "weight formats"):
            assert _row(shown, row) == _row(written, row), row
        assert _row(shown, "weight formats") and "1.weight" in shown
    one, eight = (int(_row(run_cli(["inspect", path, "--align", a], capsys)[1],
                               "parameters in this file").split()[-1].replace(",", ""))
                  for a in ("1", "8"))
    # layer 1 keeps 300 - 7 dead - 100 unread = 193 units at align 1, 200 at align 8
    assert eight > one and (eight - one) % 7 == 0
    code, _, err = run_cli(["inspect", tmp_path / "none.pt"], capsys)
    assert code == 2 and "no such file" in err
