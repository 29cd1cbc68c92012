import subprocess
import sys

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
