import pickle

import pytest
import torch
from torch.nn.utils import prune

from relief_export import load_model, models, read_model, save_checkpoint
from relief_export.errors import ReliefError
from relief_export.inputs import tensor_sha256

from .helpers import outputs, tiny_mlp

ZOO_ARCH = {"name": "lenet300_100", "kwargs": {"num_classes": 10}}


def masked_lenet():
    model = models.build("lenet300_100")
    prune.random_unstructured(model[1], "weight", amount=0.9)
    prune.l1_unstructured(model[3], "bias", amount=0.5)
    return model


def test_round_trip_keeps_function_masks_and_metadata(tmp_path):
    model = masked_lenet()
    path = save_checkpoint(tmp_path / "m.pt", model, arch=ZOO_ARCH, input_shape=[1, 1, 28, 28],
                           data="mnist5k", metrics={"test_accuracy": 0.5},
                           history=[{"iteration": 1, "remaining": 0.1}])
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "relief_export.checkpoint" and raw["version"] == 2
    weight = raw["state_dict"]["1.weight"]
    assert torch.equal(weight == 0, ~raw["masks"]["1.weight"])
    assert set(raw["masks"]) == {"1.weight", "3.bias"}
    loaded = read_model(path)
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(outputs(loaded.model, x), outputs(model, x))
    assert torch.equal(loaded.model[1].weight_mask.bool(), model[1].weight_mask.bool())
    assert loaded.input_shape == [1, 1, 28, 28] and loaded.data == "mnist5k"
    assert loaded.metrics == {"test_accuracy": 0.5}
    assert loaded.history == [{"iteration": 1, "remaining": 0.1}]


def test_a_model_pruned_by_zeros_saves_without_masks(tmp_path):
    model = models.build("lenet300_100")
    with torch.no_grad():
        model[1].weight[:, :100] = 0
    path = save_checkpoint(tmp_path / "z.pt", model, arch=ZOO_ARCH, input_shape=[1, 1, 28, 28])
    loaded = load_model(path)
    assert torch.count_nonzero(loaded[1].weight[:, :100]) == 0


class _CreatesFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "created-by-pickle"
    evil = tmp_path / "evil.pt"
    torch.save({"model": _CreatesFile(marker)}, evil)
    before = evil.read_bytes()
    with pytest.raises(ReliefError, match="pickled Python objects.*--trust-pickle"):
        load_model(evil)
    assert not marker.exists()
    assert evil.read_bytes() == before


def test_whole_pickled_module_needs_trust(tmp_path):
    model = tiny_mlp()
    torch.save(model, tmp_path / "whole.pt")
    with pytest.raises(ReliefError, match="refused"):
        load_model(tmp_path / "whole.pt")
    trusted = load_model(tmp_path / "whole.pt", trust=True)
    x = torch.randn(2, 8)
    assert torch.equal(outputs(trusted, x), outputs(model, x))


def test_export_archive_loads_with_its_input_shape(tmp_path):
    model = tiny_mlp().eval()
    program = torch.export.export(model, (torch.randn(2, 8),))
    torch.export.save(program, tmp_path / "m.pt2")
    loaded = read_model(tmp_path / "m.pt2")
    assert loaded.kind == "torch.export" and loaded.input_shape == [2, 8]
    x = torch.randn(2, 8)
    assert torch.allclose(loaded.model(x), model(x))


def test_factory_is_imported_only_when_allowed(tmp_path):
    model = tiny_mlp()
    arch = {"factory": "tests.helpers:tiny_mlp", "kwargs": {"hidden": 6}}
    path = save_checkpoint(tmp_path / "f.pt", model, arch=arch, input_shape=[1, 8])
    with pytest.raises(ReliefError, match="tests.helpers:tiny_mlp.*--allow-factory"):
        load_model(path)
    loaded = load_model(path, allow_factory=True)
    x = torch.randn(3, 8)
    assert torch.equal(outputs(loaded, x), outputs(model, x))


def test_truncated_and_garbage_files(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", masked_lenet(), arch=ZOO_ARCH,
                           input_shape=[1, 1, 28, 28])
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ReliefError, match="cut.pt: corrupt"):
        load_model(cut)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a model")
    with pytest.raises(ReliefError, match="garbage.pt: corrupt"):
        load_model(garbage)
    with pytest.raises(ReliefError, match="no such file"):
        load_model(tmp_path / "absent.pt")


def test_wrong_payloads(tmp_path):
    torch.save({"a": torch.zeros(2)}, tmp_path / "state.pt")
    with pytest.raises(ReliefError, match=r"a state_dict .* name the architecture with --arch"):
        load_model(tmp_path / "state.pt")
    torch.save({"a": [1, 2]}, tmp_path / "other.pt")
    with pytest.raises(ReliefError, match="not a relief_export checkpoint"):
        load_model(tmp_path / "other.pt")
    good = torch.load(save_checkpoint(tmp_path / "m.pt", masked_lenet(), arch=ZOO_ARCH,
                                      input_shape=[1, 1, 28, 28]), weights_only=True)
    for change, message in [({"version": 99}, "version 99"),
                            ({"arch": {"name": "alexnet", "kwargs": {}}}, "not in the model zoo"),
                            ({"arch": {"name": "lenet5", "kwargs": {}}}, "do not fit"),
                            ({"masks": {"nope.weight": torch.ones(2, dtype=torch.bool)}},
                             "mask 'nope.weight'")]:
        torch.save(with_checksums({**good, **change}), tmp_path / "bad.pt")
        with pytest.raises(ReliefError, match=message):
            load_model(tmp_path / "bad.pt")


def with_checksums(payload):
    """The checkpoint dict with its checksums recomputed (so field checks are what fails)."""
    return {**payload, "checksums": {
        table: {k: tensor_sha256(v) for k, v in payload[table].items()}
        for table in ("state_dict", "masks")}}


def test_failed_save_leaves_no_file_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "m.pt"
    target.write_bytes(b"old")
    with pytest.raises(ReliefError, match="arch must be"):
        save_checkpoint(target, tiny_mlp(), arch={"oops": 1}, input_shape=[1, 8])

    class Unsaveable(torch.nn.Module):
        def state_dict(self, *args, **kwargs):
            return {"x": pickle}  # a module object cannot be pickled

    with pytest.raises(Exception):  # noqa: B017 - whatever torch.save raises
        save_checkpoint(target, Unsaveable(), arch=ZOO_ARCH, input_shape=[1, 8])
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_unwritable_destination(tmp_path):
    with pytest.raises(ReliefError, match="does not exist"):
        save_checkpoint(tmp_path / "missing" / "m.pt", tiny_mlp(), arch=ZOO_ARCH,
                        input_shape=[1, 8])
