"""Capture: torch.fx first, torch.export where fx cannot trace; archives the way people write
them (static batch, in-place ops, a library's output class, integer token ids)."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import relief_export as rx
from relief_export.errors import ReliefError
from relief_export.runtime.ort import session

from .helpers import run_cli


class IntOfProxy(nn.Module):
    """fx cannot trace int(tensor size arithmetic) (HF models do this); torch.export can."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 8), nn.Linear(8, 2)

    def forward(self, x):
        tokens = int(x.shape[1])
        return self.fc2(F.relu(self.fc1(x[:, :tokens])).mean(1))


class DataDependent(nn.Module):
    """A Python branch on the values: neither fx nor torch.export can capture it."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        return self.fc(x) if x.sum() > 0 else x


class AuthorsStyle(nn.Module):
    """x.view(x.size(0), -1) and in-place ops, exported with a fixed batch."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.drop, self.fc = nn.Dropout(0.2, inplace=True), nn.Linear(6 * 4 * 4, 3)

    def forward(self, x):
        y = self.bn(self.conv(x))
        y += 1.0
        y = self.drop(F.relu(y, inplace=True))
        return self.fc(y.view(y.size(0), -1))


def dead_units(layer: nn.Module, units: list[int]) -> None:
    with torch.no_grad():
        layer.weight[units] = 0
        if layer.bias is not None:
            layer.bias[units] = 0


def test_torch_export_takes_over_where_fx_cannot_trace():
    torch.manual_seed(0)
    model = IntOfProxy().eval()
    dead_units(model.fc1, [0, 1, 2])
    small, report = rx.compact_with_report(model, torch.randn(2, 5, 6))
    assert report.captured == "torch.export"
    assert [layer.shape_after for layer in report.layers] == [[5, 6], [2, 5]]
    x = torch.randn(7, 5, 6)
    with torch.no_grad():
        assert torch.allclose(small(x), model(x), atol=1e-6)


def test_an_untraceable_model_is_one_clear_error(tmp_path, capsys):
    with pytest.raises(ReliefError) as caught:
        rx.compact(DataDependent(), torch.rand(1, 2))
    message = str(caught.value)
    assert "cannot capture DataDependent with torch.fx" in message
    assert "torch.export failed too" in message
    assert "export it with torch.export yourself" in message and ".pt2" in message
    out = tmp_path / "x.onnx"
    with pytest.raises(ReliefError, match="torch.export failed too"):
        rx.export_onnx(DataDependent(), out, example_inputs=torch.rand(1, 2))
    assert not out.exists()


def test_static_batch_archive_with_in_place_ops(tmp_path, capsys):
    torch.manual_seed(0)
    model = AuthorsStyle().eval()
    dead_units(model.conv, [1, 4])
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
    archive = tmp_path / "authors.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(2, 1, 4, 4),)), str(archive))
    out = tmp_path / "authors.onnx"
    code, stdout, err = run_cli([archive, "--out", out], capsys)
    assert code == 0, err
    assert "left uncompacted" not in stdout  # add_ / relu_ / dropout_ are functional now
    x = torch.randn(9, 1, 4, 4)  # another batch size than the archive's 2
    got = session(out.read_bytes()).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()
    conv = next(n for n in onnx.load(out).graph.node if n.op_type == "Conv")
    assert conv is not None


class FixedOnes(nn.Module):
    """Builds a tensor of the batch size inside the graph: the archive cannot run another."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(x) + torch.ones(x.shape[0], 2)


def test_an_archive_that_fixes_its_batch_size_says_so(tmp_path, capsys):
    archive = tmp_path / "fixed.pt2"
    torch.export.save(torch.export.export(FixedOnes().eval(), (torch.randn(2, 3),)),
                      str(archive))
    code, _, err = run_cli([archive, "--out", tmp_path / "fixed.onnx"], capsys)
    assert code == 2
    assert "runs at batch size 2 but not 3" in err and "dynamic batch axis" in err
    assert "Traceback" not in err and not (tmp_path / "fixed.onnx").exists()


needs_transformers = pytest.mark.skipif(importlib.util.find_spec("transformers") is None,
                                        reason="needs transformers")


@pytest.mark.slow
@needs_transformers
def test_hugging_face_bert_archive_with_token_ids(tmp_path, capsys):
    """A BertModel saved with torch.export: its output class is read as a dict, its integer
    input ids come from the archive, head 2 of layer 1 (unread) goes whole."""
    import transformers as hf

    torch.manual_seed(0)
    model = hf.BertModel(hf.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                       num_attention_heads=4, intermediate_size=64,
                                       max_position_embeddings=64)).eval()
    with torch.no_grad():
        model.encoder.layer[1].attention.output.dense.weight[:, 16:24] = 0
    ids = torch.randint(0, 100, (2, 12))
    archive = tmp_path / "bert.pt2"
    torch.export.save(torch.export.export(model, (ids,)), str(archive))
    before = archive.read_bytes()
    out = tmp_path / "bert.onnx"
    code, _, err = run_cli([archive, "--out", out, "--verbose"], capsys)
    assert code == 0, err
    proto = onnx.load(out)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert [o.name for o in proto.graph.output] == ["output_0", "output_1"]
    other = torch.randint(0, 100, (3, 12))
    got = session(out.read_bytes()).run(None, {proto.graph.input[0].name: other.numpy()})
    with torch.no_grad():
        expected = model(other)
    for a, b in zip(got, (expected.last_hidden_state, expected.pooler_output), strict=True):
        assert np.abs(a - b.numpy()).max() <= 1e-4 * np.abs(b.numpy()).max()
    assert archive.read_bytes() == before  # the output class was rewritten on a copy only


def test_stepped_channel_slices_in_an_archive(tmp_path):
    """aten.slice with a step on the channel axis becomes an index_select of what stays."""
    from tests.channels.test_channel_ops import SteppedChannels, kill

    torch.manual_seed(0)
    model = SteppedChannels().eval()
    kill(model.conv, [2, 5])
    x = torch.randn(2, 3, 4, 4)
    archive = tmp_path / "stepped.pt2"
    torch.export.save(torch.export.export(model, (x,)), str(archive))
    loaded = rx.load_model(archive)
    small, report = rx.compact_with_report(loaded, x)
    assert report.captured == "torch.export"
    assert sorted(layer.shape_after[0] for layer in report.layers) == [2, 2, 6]
    y = torch.randn(5, 3, 4, 4)
    with torch.no_grad():
        assert torch.allclose(small(y), model(y), atol=1e-5)


def test_an_untraceable_class_from_the_command_line(tmp_path, capsys):
    weights = tmp_path / "weights.pt"
    torch.save(DataDependent().state_dict(), weights)
    code, _, err = run_cli([weights, "--arch", "tests.test_capture:DataDependent",
                            "--allow-factory", "--input-shape", "1,2",
                            "--out", tmp_path / "x.onnx"], capsys)
    assert code == 2 and "torch.export failed too" in err and "Traceback" not in err
    assert not (tmp_path / "x.onnx").exists()


class TracedTwin(IntOfProxy):
    """The same function without int(): torch.fx traces it."""

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)).mean(1))


def test_pruning_a_model_only_torch_export_captures_matches_the_fx_route():
    """relief_step on IntOfProxy goes through torch.export, with the graph calling the
    model's own layers; its masks equal those of the fx-traceable twin with the same weights."""
    from relief_export.prune.relief import relief_step

    torch.manual_seed(0)
    exported, traced = IntOfProxy().eval(), TracedTwin().eval()
    traced.load_state_dict(exported.state_dict())
    with torch.no_grad():
        exported.fc1.weight[2] = 0  # a unit that never fires: the dead-unit rule takes it
        exported.fc1.bias[2] = -1.0
    traced.load_state_dict(exported.state_dict())
    calibration = torch.randn(32, 5, 6, generator=torch.Generator().manual_seed(1))
    masks = relief_step(exported, calibration, alpha_fc=0.9)
    expected = relief_step(traced, calibration, alpha_fc=0.9)
    assert masks.keys() == expected.keys() == {"fc1.weight", "fc1.bias", "fc2.weight",
                                               "fc2.bias"}
    assert all(torch.equal(masks[k], expected[k]) for k in masks)
    assert not masks["fc1.weight"][2].any() and not masks["fc1.bias"][2]
    assert torch.equal(exported.fc1.weight != 0, masks["fc1.weight"] & (exported.fc1.weight_orig
                                                                       != 0))


@pytest.mark.slow
@needs_transformers
def test_pruning_and_compacting_hugging_face_bert():
    import transformers as hf

    from relief_export.prune.relief import relief_step

    torch.manual_seed(0)
    model = hf.BertModel(hf.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                       num_attention_heads=4, intermediate_size=64,
                                       max_position_embeddings=64)).eval()
    ids = torch.randint(0, 100, (32, 12), generator=torch.Generator().manual_seed(1))
    masks = relief_step(model, ids, alpha_fc=0.9)
    names = {f"{name}.weight" for name, module in model.named_modules()
             if isinstance(module, nn.Linear)}
    assert {k for k in masks if k.endswith(".weight")} == names
    density = sum(int(masks[k].sum()) for k in names) / sum(masks[k].numel() for k in names)
    assert 0.2 < density < 0.95
    small, report = rx.compact_with_report(model, ids[:2])
    # one step thins connections; whole units seldom die in one step of a transformer
    assert report.captured == "torch.export" and report.params_after <= report.params_before
    with torch.no_grad():
        expected, got = model(ids).last_hidden_state, small(ids)["last_hidden_state"]
    assert (expected - got).abs().max() <= 1e-5 * expected.abs().max()
