import argparse
import json
import re
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
                           (["--data", "synthetic:3,32,32,4"],
                            "does not run on the samples of --data synthetic:3,32,32,4")]:
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


def test_bare_command_lists_the_subcommands(capsys):
    code, out, err = run_cli([], capsys)
    assert code == 0 and err == ""
    for command in ("train", "prune", "inspect", "bench", "demo"):
        assert re.search(rf"^  {command} +\S", out, re.M), command
    assert "relief-export MODEL --out OUT.onnx" in out


def _all_parsers():
    from relief_export.cli import build_export_parser, build_parser

    top = build_parser()
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    return [("export", build_export_parser()), *sub.choices.items()]


def test_every_option_has_help_and_shows_its_default():
    for name, parser in _all_parsers():
        text = parser.format_help()
        for action in parser._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS:
                continue
            assert action.help, (name, action.option_strings)
            if action.default not in (None, False, argparse.SUPPRESS):
                shown = ",".join(map(str, action.default)) if isinstance(action.default, list) \
                    else str(action.default)
                assert f"(default: {shown})" in " ".join(text.split()) or \
                    "default" in action.help, (name, action.option_strings)
    train = dict(_all_parsers())["train"].format_help()
    from relief_export import models

    assert all(arch in train for arch in models.names())


def test_help_does_not_import_torch():
    """--help stays fast: building every parser imports neither torch nor onnx."""
    code = ("import sys; from relief_export.cli import build_parser, build_export_parser; "
            "build_parser().format_help(); build_export_parser().format_help(); "
            "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules))")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout
    assert shown.strip() == "[]"


def test_json_and_quiet(tmp_path, capsys):
    from relief_export import models, save_checkpoint

    model = models.build("lenet300_100")
    with torch.no_grad():
        model[1].weight[:50] = 0
    path = save_checkpoint(tmp_path / "m.pt", model, arch={"name": "lenet300_100",
                                                            "kwargs": {}},
                           input_shape=[1, 1, 28, 28])
    out = tmp_path / "m.onnx"
    code, text, err = run_cli([path, "--out", out, "--json"], capsys)
    assert code == 0
    result = json.loads(text)
    assert result["file_bytes"] == out.stat().st_size
    assert result["compaction"]["layers"][0]["shape_after"] == [256, 784]
    code, text, err = run_cli([path, "--out", out, "--quiet"], capsys)
    assert code == 0 and text == "" and err == ""
    code, text, _ = run_cli(["bench", out, "--batch", "2", "--repeats", "2", "--warmup", "0",
                             "--no-memory", "--json"], capsys)
    bench = json.loads(text)
    assert bench["models"][0]["file_bytes"] == out.stat().st_size
    assert bench["models"][0]["parameters"] == result["params_compact"]
    code, text, _ = run_cli(["inspect", path, "--json"], capsys)
    assert json.loads(text)["export"]["params_compact"] == result["params_compact"]
    code, _, err = run_cli([path, "--out", tmp_path / "x" / "m.onnx", "--json"], capsys)
    assert code == 2 and "x" in err  # errors stay one line on stderr


def test_progress_is_plain_lines_off_a_terminal(capsys, monkeypatch):
    from relief_export.progress import progress, set_quiet

    monkeypatch.setenv("RELIEF_EXPORT_PROGRESS_SECONDS", "0")
    bar = progress(range(3), desc="work", unit="step")
    for i in bar:
        bar.set_postfix(loss=i)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "work: 0/3 step (0 s)"
    assert lines[-1].startswith("work: 3/3 step (") and lines[-1].endswith("loss=2)")
    assert len(lines) == 4 and "\r" not in "".join(lines)
    set_quiet(True)
    try:
        assert list(progress(range(3), desc="work")) == [0, 1, 2]
    finally:
        set_quiet(False)
    assert capsys.readouterr().err == ""
