"""The one writer: atomic, all or none, special files never replaced, inputs never outputs,
every OSError one line."""

import errno
import os
import socket
import stat
import subprocess
import threading

import pytest

from relief_export import files
from relief_export.cli import main
from relief_export.errors import ReliefError
from relief_export.files import check_output, write_file, write_files


def test_replaces_only_when_complete_and_uses_the_umask(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    old_umask = os.umask(0o022)
    try:
        write_file(target, b"new contents")
    finally:
        os.umask(old_umask)
    assert target.read_bytes() == b"new contents"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_several_outputs_are_all_or_none(tmp_path, monkeypatch):
    first, second = tmp_path / "a.onnx", tmp_path / "b.json"
    first.write_bytes(b"old a")
    real_write = os.write
    calls = []

    def write_then_fill_the_disk(handle, data):
        calls.append(len(data))
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(handle, data)

    monkeypatch.setattr(files.os, "write", write_then_fill_the_disk)
    with pytest.raises(ReliefError, match=r"b.json: No space left on device"):
        write_files({first: b"new a", second: b"new b"})
    assert first.read_bytes() == b"old a" and not second.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx"]


def test_character_devices_are_written_not_replaced(tmp_path):
    write_file("/dev/null", b"discarded")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    with pytest.raises(ReliefError, match="/dev/full: No space left on device"):
        write_file("/dev/full", b"x" * 10)
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_a_fifo_is_written_when_read_and_refused_without_a_reader(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ReliefError, match="pipe: a FIFO with no process reading it"):
        write_file(fifo, b"nobody listens")
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    while not received and reader.is_alive():
        try:
            write_file(fifo, b"hello")
            break
        except ReliefError:  # the reader has not opened its end yet
            continue
    reader.join(timeout=10)
    assert received == [b"hello"] and stat.S_ISFIFO(fifo.stat().st_mode)


def test_sockets_folders_virtual_files_and_inputs_are_refused(tmp_path):
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "sock"))
    try:
        with pytest.raises(ReliefError, match="sock: is a socket"):
            write_file(tmp_path / "sock", b"x")
    finally:
        server.close()
    with pytest.raises(ReliefError, match="is a folder"):
        write_file(tmp_path, b"x")
    with pytest.raises(ReliefError, match="virtual file system .proc."):
        check_output("/proc/self/relief-out")
    with pytest.raises(ReliefError, match="does not exist"):
        check_output(tmp_path / "missing" / "x")
    model = tmp_path / "model.pt"
    model.write_bytes(b"input")
    os.symlink(model, tmp_path / "alias.pt")
    for output in (model, tmp_path / "alias.pt", tmp_path / "." / "model.pt"):
        with pytest.raises(ReliefError, match="is the input model"):
            write_file(output, b"x", inputs=[model])
    assert model.read_bytes() == b"input"


def test_a_symlink_output_writes_its_target(tmp_path):
    real = tmp_path / "real.onnx"
    real.write_bytes(b"old")
    os.symlink(real, tmp_path / "link.onnx")
    write_file(tmp_path / "link.onnx", b"new")
    assert (tmp_path / "link.onnx").is_symlink() and real.read_bytes() == b"new"


def test_temp_files_of_killed_runs_are_removed_by_the_next_write(tmp_path):
    stale = tmp_path / ".out.onnx.999999999.0000abcd.tmp"  # beyond any pid_max: no process
    stale.write_bytes(b"partial")
    alive = tmp_path / f".out.onnx.{os.getpid()}.0000abcd.tmp"
    alive.write_bytes(b"another writer, still running")
    write_file(tmp_path / "out.onnx", b"done")
    assert not stale.exists() and alive.exists()


def _mount_small_tmpfs(folder):
    if os.geteuid() != 0:
        return False
    folder.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                            capture_output=True, check=False)
    return result.returncode == 0


def test_a_full_disk_is_one_line_and_exit_2(tmp_path, capsys):
    """A real full file system (a 64 KiB tmpfs) under the train command."""
    small = tmp_path / "small"
    if not _mount_small_tmpfs(small):
        pytest.skip("needs root and tmpfs mounts")
    try:
        (small / "old.pt").write_bytes(b"previous")
        code = main(["train", "--arch", "lenet300_100", "--data", "synthetic", "--epochs", "1",
                     "--out", str(small / "old.pt")])
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("relief-export:")]
        assert code == 2 and len(errors) == 1 and "Traceback" not in err
        assert err.splitlines()[-1] == errors[0]  # progress lines before it, if any
        assert "old.pt: No space left on device" in err
        assert (small / "old.pt").read_bytes() == b"previous"
        assert sorted(p.name for p in small.iterdir()) == ["old.pt"]
    finally:
        subprocess.run(["umount", str(small)], check=False)
