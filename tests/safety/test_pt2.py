"""torch.export archives are untrusted: every route by which torch.export.load runs code from
the file is refused before anything is deserialised, and the payload stays inert."""

import io
import subprocess
import sys

import pytest
import torch

import relief_export as rx
from relief_export.cli import main
from relief_export.errors import ReliefError

from ..helpers import tiny_mlp

# routes by which torch's own loader runs the payload (checked below, so the payloads are real)
FIRING = ("sample_inputs", "use_pickle_weight", "use_pickle_constant", "opaque_object",
          "guards_code")
REASONS = {
    "sample_inputs": "sample_inputs/model.pt .sample inputs. holds pickled Python objects "
                     r".*eval.",
    "use_pickle_weight": "'1.weight' is stored as a pickle",
    "use_pickle_constant": "'evil' is stored as a pickle",
    "opaque_object": "opaque_obj_0 holds a pickled Python object",
    "custom_object": "custom_obj_0 holds a pickled TorchScript object",
    "guards_code": "holds guard source code",
    "custom_op": "calls 'torch.ops.evil.run.default', which is not an op of torch's own",
    "aotinductor": "holds compiled code",
    "legacy_layout": "serialized_.*pt holds pickled data .the legacy archive layout.",
}


@pytest.fixture(scope="module")
def archive():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()
    buffer = io.BytesIO()
    torch.export.save(torch.export.export(model, (torch.rand(2, 8),)), buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("route", FIRING)
def test_the_payloads_are_real_torch_runs_them(fuzz, archive, route, tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt2"
    path.write_bytes(fuzz.pt2_payload(archive, route, marker))
    subprocess.run([sys.executable, "-c", "import sys, torch; "
                    "torch.export.load(sys.argv[1]).module()(torch.rand(2, 8))", str(path)],
                   capture_output=True, check=False, timeout=300)
    assert marker.exists(), f"{route}: torch.export.load did not run the payload"


@pytest.mark.parametrize("route", sorted(REASONS))
@pytest.mark.parametrize("suffix", [".pt2", ".pt"])
def test_every_route_is_refused_naming_the_member(fuzz, archive, route, suffix, tmp_path,
                                                  capsys):
    marker = tmp_path / "marker"
    path = tmp_path / f"evil{suffix}"
    path.write_bytes(fuzz.pt2_payload(archive, route, marker))
    before = path.read_bytes()
    with pytest.raises(ReliefError, match=REASONS[route]) as raised:
        rx.load_model(path)
    assert "--trust-pickle" in str(raised.value)
    for command in (["inspect", path], [path, "--out", tmp_path / "x.onnx"]):
        code = main([str(a) for a in command])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert not marker.exists() and path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_a_plain_archive_still_loads_and_exports(tmp_path):
    model = tiny_mlp().eval()
    torch.export.save(torch.export.export(model, (torch.rand(2, 8),)), tmp_path / "m.pt2")
    loaded = rx.read_model(tmp_path / "m.pt2")
    x = torch.rand(5, 8)
    assert loaded.kind == "torch.export" and torch.allclose(loaded.model(x), model(x))
    report = rx.export_onnx(tmp_path / "m.pt2", tmp_path / "m.onnx")
    assert report.max_relative_error <= 1e-4


def test_trust_loads_what_is_refused_otherwise(fuzz, archive, tmp_path):
    """With trust the user takes responsibility: the archive loads (and its code runs)."""
    marker = tmp_path / "marker"
    path = tmp_path / "m.pt2"
    path.write_bytes(fuzz.pt2_payload(archive, "sample_inputs", marker))
    with pytest.raises(ReliefError):
        rx.load_model(path)
    model = rx.load_model(path, trust=True)
    assert marker.exists() and model(torch.rand(2, 8)).shape == (2, 4)


def test_damaged_zip_directory_is_one_clear_error(archive, tmp_path, capsys):
    truncated = tmp_path / "cut.pt2"
    truncated.write_bytes(archive[:-30])
    flipped = bytearray(archive)
    flipped[len(flipped) // 3] ^= 0xFF
    (tmp_path / "flip.pt2").write_bytes(bytes(flipped))
    for name, message in (("cut.pt2", "corrupt or truncated zip archive"),
                          ("flip.pt2", "does not match its CRC-32")):
        with pytest.raises(ReliefError, match=message):
            rx.load_model(tmp_path / name)
        assert main(["inspect", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
