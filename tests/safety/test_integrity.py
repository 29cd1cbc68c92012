"""Checkpoints carry sha256 checksums of their tensors; exported ONNX files record those of
their source and weights, and inspect checks them."""

import hashlib
import io
import zipfile

import onnx
import pytest
import torch
from onnx import numpy_helper

import relief_export as rx
from relief_export import models
from relief_export.cli import main
from relief_export.errors import ReliefError
from relief_export.inputs import tensor_sha256
from relief_export.onnx.integrity import weights_sha256

ARCH = {"name": "lenet300_100", "kwargs": {}}


@pytest.fixture()
def checkpoint(tmp_path):
    model = models.build("lenet300_100")
    with torch.no_grad():
        model[1].weight[:, ::2] = 0
    return rx.save_checkpoint(tmp_path / "m.pt", model, arch=ARCH, input_shape=[1, 1, 28, 28])


def test_tensor_sha256_is_over_dtype_shape_and_bytes():
    x = torch.tensor([[1.0, 2.0]])
    expected = hashlib.sha256(b"torch.float32|[1, 2]|" + x.numpy().tobytes()).hexdigest()
    assert tensor_sha256(x) == expected
    assert tensor_sha256(x.reshape(2, 1)) != expected  # same bytes, other shape
    assert tensor_sha256(x.double()) != expected


def test_every_tensor_is_checked_at_load(checkpoint, tmp_path):
    raw = torch.load(checkpoint, weights_only=True)
    assert set(raw["checksums"]["state_dict"]) == set(raw["state_dict"])
    weight = raw["state_dict"]["1.weight"]
    assert raw["checksums"]["state_dict"]["1.weight"] == tensor_sha256(weight)
    raw["state_dict"]["3.bias"][0] += 1.0  # an edit with a consistent container (new zip CRCs)
    torch.save(raw, tmp_path / "edited.pt")
    with pytest.raises(ReliefError, match="corrupt checkpoint: tensor 3.bias does not match "
                                          "its checksum"):
        rx.load_model(tmp_path / "edited.pt")


def test_flipped_bytes_in_tensor_data_are_caught(checkpoint, tmp_path):
    data = bytearray(checkpoint.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        member = next(i for i in archive.infolist() if i.filename.endswith("/data/0"))
    data[member.header_offset + 200] ^= 0x10  # inside the first tensor's record
    (tmp_path / "flipped.pt").write_bytes(bytes(data))
    with pytest.raises(ReliefError, match="corrupt"):
        rx.load_model(tmp_path / "flipped.pt")


def test_version_1_checkpoints_load_with_a_note(checkpoint, tmp_path, capsys):
    raw = torch.load(checkpoint, weights_only=True)
    del raw["checksums"]
    torch.save({**raw, "version": 1}, tmp_path / "v1.pt")
    loaded = rx.read_model(tmp_path / "v1.pt")
    assert len(loaded.notes) == 1 and "without checksums" in loaded.notes[0]
    assert main(["inspect", str(tmp_path / "v1.pt")]) == 0
    assert "note: " in capsys.readouterr().err


def test_onnx_records_source_and_weights_and_inspect_checks_them(checkpoint, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    rx.export_onnx(checkpoint, out)
    model = onnx.load(out)
    props = {p.key: p.value for p in model.metadata_props}
    assert props["source_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert props["weights_sha256"] == weights_sha256(model)
    assert main(["inspect", str(out)]) == 0
    assert "ok" in capsys.readouterr().out
    first = model.graph.initializer[0]
    array = numpy_helper.to_array(first).copy()
    array.flat[0] += 1
    first.CopyFrom(numpy_helper.from_array(array, first.name))
    onnx.save(model, tmp_path / "edited.onnx")
    assert main(["inspect", str(tmp_path / "edited.onnx")]) == 2
    captured = capsys.readouterr()
    assert "MISMATCH" in captured.out and "do not match the sha256" in captured.err


def test_a_name_damaged_into_invalid_utf8_is_a_mismatch(checkpoint, tmp_path, capsys):
    """protobuf returns bytes for a string field that is not UTF-8; the check still works."""
    out = tmp_path / "m.onnx"
    rx.export_onnx(checkpoint, out)
    name = onnx.load(out).graph.initializer[0].name.encode()
    data = out.read_bytes()
    assert data.count(name) >= 1
    damaged = tmp_path / "damaged.onnx"
    damaged.write_bytes(data.replace(name, b"\xff" + name[1:]))
    assert main(["inspect", str(damaged)]) == 2
    assert "do not match the sha256" in capsys.readouterr().err
