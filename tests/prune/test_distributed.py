"""NNrelief under torchrun (2 CPU processes, gloo) and resumable runs."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from relief_export.cli import main
from relief_export.prune.distributed import LOCAL, tensor_digest
from relief_export.prune.relief import relief_step

from . import distributed_worker as worker

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
            "2"]
OPTIONS = ["--data", "synthetic", "--iterations", "2", "--epochs", "4", "--calib-samples",
           "101", "--batch-size", "16"]


def run(args, cwd, **kwargs):
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600,
                          check=False, **kwargs)


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dense")
    assert main(["train", "--arch", "lenet300_100", "--data", "synthetic", "--epochs", "1",
                 "--out", str(folder / "dense.pt")]) == 0
    return folder / "dense.pt"


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ranks")
    result = run([*TORCHRUN, str(Path(worker.__file__)), str(out)], Path.cwd())
    assert result.returncode == 0, result.stderr[-2000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


def test_each_rank_streams_its_share(two_ranks):
    assert [r["samples"] for r in two_ranks] == [26, 25]  # 51 samples, 2 processes


def test_all_reduced_statistics_equal_one_process_statistics(two_ranks):
    single = worker.statistics(worker.model(), worker.calibration(), LOCAL)
    for rank in two_ranks:
        assert rank["stats"].keys() == single.keys()
        for name, value in single.items():
            scale = max(float(value.abs().max()), 1e-12)
            assert float((rank["stats"][name] - value).abs().max()) / scale <= 1e-6, name


def test_masks_equal_one_process_masks_and_are_identical_on_every_rank(two_ranks):
    single = relief_step(worker.model(), worker.calibration())
    assert two_ranks[0]["digest"] == two_ranks[1]["digest"] == tensor_digest(single)
    pruned = sum(int((~m).sum()) for m in single.values())
    assert pruned > 1000  # the comparison is about real pruning decisions


def test_a_disagreement_between_ranks_is_an_error_on_every_rank(two_ranks):
    for rank in two_ranks:
        assert rank["disagreement"].startswith("test digests differ between ranks")


def test_prune_under_torchrun_writes_once_from_rank_0(dense, tmp_path):
    result = run([*TORCHRUN, "-m", "relief_export", "prune", str(dense), *OPTIONS,
                  "--epochs", "1", "--out", str(tmp_path / "m.pt")], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("wrote ") == 1 and result.stdout.count("iteration") == 1
    saved = torch.load(tmp_path / "m.pt", weights_only=True)
    assert len(saved["history"]) == 3
    for name, mask in saved["masks"].items():  # pruned weights are exactly 0 after DDP
        assert torch.count_nonzero(saved["state_dict"][name][~mask]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def history(path):
    saved = torch.load(path, weights_only=True)
    return ([{k: v for k, v in e.items() if k != "seconds"} for e in saved["history"]],
            tensor_digest(saved["masks"]), tensor_digest(saved["state_dict"]))


def interrupted(dense, out, how):
    """Start a run, wait for its first saved state, then stop it with ``how``."""
    command = [sys.executable, "-m", "relief_export", "prune", str(dense), *OPTIONS,
               "--out", str(out)]
    process = subprocess.Popen(command, cwd=out.parent, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    state = out.with_name(out.name + ".resume")
    deadline = time.monotonic() + 300
    while not state.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)
    process.send_signal(how)
    _, err = process.communicate(timeout=300)
    return process.returncode, err, state


@pytest.fixture(scope="module")
def uninterrupted(dense, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "m.pt"
    assert main(["prune", str(dense), *OPTIONS, "--out", str(out)]) == 0
    return history(out)


def test_sigterm_saves_the_state_and_exits_0_then_resume_matches(dense, uninterrupted,
                                                                  tmp_path):
    out = tmp_path / "m.pt"
    code, err, state = interrupted(dense, out, signal.SIGTERM)
    assert code == 0 and "run state saved to" in err and "--resume" in err
    assert state.exists() and not out.exists()
    assert main(["prune", str(dense), *OPTIONS, "--out", str(out), "--resume"]) == 0
    assert history(out) == uninterrupted and not state.exists()


def test_resume_after_a_kill_matches_the_uninterrupted_run(dense, uninterrupted, tmp_path):
    out = tmp_path / "m.pt"
    code, _, state = interrupted(dense, out, signal.SIGKILL)
    assert code == -signal.SIGKILL and state.exists()
    assert main(["prune", str(dense), *OPTIONS, "--out", str(out), "--resume"]) == 0
    assert history(out) == uninterrupted


def test_a_state_from_another_run_is_refused(dense, tmp_path, capsys):
    out = tmp_path / "m.pt"
    code, _, state = interrupted(dense, out, signal.SIGTERM)
    assert code == 0
    before = state.read_bytes()
    changed = [o if o != "101" else "99" for o in OPTIONS]
    assert main(["prune", str(dense), *changed, "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "written by another run (it differs in: config)" in err and err.count("\n") == 1
    assert state.read_bytes() == before and not out.exists()
    assert main(["prune", str(dense), *OPTIONS, "--out", str(tmp_path / "x.pt"),
                 "--resume"]) == 2
    assert "no run state to resume" in capsys.readouterr().err
