"""``relief-export prune`` on what users have: every model input kind, their data formats,
then export (verified in onnxruntime) of the result."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from torch import nn

from relief_export import data
from relief_export.inputs import read_model
from relief_export.prune.relief import ReliefConfig, relief
from relief_export.prune.train import FitConfig

from .helpers import outputs, run_cli

CNN_SOURCE = '''
import torch
from torch import nn


class SmallCNN(nn.Module):
    def __init__(self, classes=3):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
        return self.head(torch.relu(self.conv2(x)).mean((2, 3)))
'''
PRUNE = ["--iterations", "1", "--epochs", "1", "--calib-samples", "64"]


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2)).eval()


def _table(path):
    rng = np.random.default_rng(0)
    x = rng.random((120, 6)).astype(np.float32)
    np.savez(path, x=x, y=(x[:, 0] > 0.5).astype(np.int64))
    return f"npz:{path}"


def _exported_error(checkpoint, tmp_path, capsys, extra=()):
    out = tmp_path / "model.onnx"
    code, _, err = run_cli([checkpoint, "--out", out, *extra], capsys)
    assert code == 0, err
    loaded = read_model(checkpoint, allow_factory=True, trust="--trust-pickle" in extra,
                        trust_remote_code="--trust-remote-code" in extra)
    x = loaded.example_inputs[0] if loaded.example_inputs else \
        torch.rand([4, *loaded.input_shape[1:]], generator=torch.Generator().manual_seed(1))
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    want = outputs(loaded.model, x).numpy()
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))


@pytest.mark.parametrize("kind", ["pt2", "onnx", "pickle", "state_dict"])
def test_prune_every_file_kind_writes_a_checkpoint_that_exports(tmp_path, capsys, kind):
    model, spec = _mlp(), _table(tmp_path / "t.npz")
    x = torch.rand(2, 6)
    source, extra = tmp_path / f"model.{kind}", []
    if kind == "pt2":
        torch.export.save(torch.export.export(model, (x,), dynamic_shapes=(
            {0: torch.export.Dim.AUTO},)), source)
    elif kind == "onnx":
        torch.onnx.export(model, (x,), source, dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {0: "n"}})
    elif kind == "pickle":
        torch.save(model, source)
        extra = ["--trust-pickle"]
        code, _, err = run_cli(["prune", source, "--data", spec, "--out", tmp_path / "p.pt"],
                               capsys)
        assert code == 2 and "--trust-pickle" in err and not (tmp_path / "p.pt").exists()
    else:
        torch.save(model.state_dict(), source)
        extra = ["--arch", "tests.helpers_prune:mlp6", "--allow-factory"]
    pruned = tmp_path / "pruned.pt"
    before = source.read_bytes()
    code, _out, err = run_cli(["prune", source, "--data", spec, "--out", pruned, *PRUNE,
                              *extra], capsys)
    assert code == 0, err
    assert source.read_bytes() == before
    loaded = read_model(pruned, trust=kind == "pickle", allow_factory=True)
    masks = [b for n, b in loaded.model.named_buffers() if n.endswith("_mask")]
    assert loaded.history[-1]["remaining_weights"] < 1.0
    assert masks and sum(int((m == 0).sum()) for m in masks) > 0
    export_extra = ["--trust-pickle"] if kind == "pickle" else ["--allow-factory"]
    assert _exported_error(pruned, tmp_path, capsys, export_extra) <= 1e-4


def test_npz_masks_equal_the_python_api(tmp_path, capsys):
    model, spec = _mlp(), _table(tmp_path / "t.npz")
    source = tmp_path / "m.onnx"
    torch.onnx.export(model, (torch.rand(2, 6),), source, dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "n"}})
    pruned = tmp_path / "p.pt"
    code, _, err = run_cli(["prune", source, "--data", spec, "--out", pruned, *PRUNE], capsys)
    assert code == 0, err
    api_model = read_model(source).model
    full, test = data.load(spec, "train"), data.load(spec, "test")
    train, val = data.train_val_split(full, 0.1, 0)
    config = ReliefConfig(iterations=1, calib_samples=64, finetune=FitConfig(epochs=1))
    result = relief(api_model, train, config, val_data=val, test_data=test, progress=False)
    cli = read_model(pruned).model
    cli_masks = {n: b for n, b in cli.named_buffers() if n.endswith("_mask")}
    api_masks = {n: b for n, b in result.model.named_buffers() if n.endswith("_mask")}
    assert cli_masks and cli_masks.keys() == api_masks.keys()
    assert all(torch.equal(cli_masks[n], api_masks[n]) for n in cli_masks)


def test_hand_written_cnn_on_an_imagefolder(tmp_path, capsys, monkeypatch):
    rng = np.random.default_rng(0)
    for split, count in (("train", 12), ("test", 4)):
        for label in range(3):
            folder = tmp_path / "photos" / split / f"c{label}"
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 60, (10, 10, 3), dtype=np.uint8)
                pixels[..., label] += 180
                Image.fromarray(pixels).save(folder / f"{i}.png")
    (tmp_path / "mycnn.py").write_text(CNN_SOURCE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    from mycnn import SmallCNN

    torch.manual_seed(0)
    torch.save(SmallCNN().state_dict(), tmp_path / "cnn.pt")
    code, _out, err = run_cli(["prune", "cnn.pt", "--arch", "mycnn:SmallCNN", "--allow-factory",
                              "--data", "imagefolder:photos", "--image-size", "8",
                              "--normalize", "dataset", "--out", "pruned.pt", *PRUNE], capsys)
    assert code == 0, err
    loaded = read_model(tmp_path / "pruned.pt", allow_factory=True)
    assert loaded.input_shape == [1, 3, 8, 8]
    assert loaded.data == "imagefolder:photos?image_size=8&normalize=dataset"
    assert _exported_error(tmp_path / "pruned.pt", tmp_path, capsys, ["--allow-factory"]) <= 1e-4


def test_hugging_face_text_classifier_from_its_folder(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    datasets = pytest.importorskip("datasets")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "good", "bad", "the", "film"]
    tokenizer = transformers.BertTokenizerFast(vocab={w: i for i, w in enumerate(words)})
    config = transformers.BertConfig(vocab_size=len(words), hidden_size=16,
                                     num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16,
                                     num_labels=2)
    torch.manual_seed(0)
    folder = tmp_path / "bert"
    transformers.BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    texts = ["the film good", "the film bad", "good film", "bad film"] * 20
    labels = [1, 0, 1, 0] * 20
    datasets.Dataset.from_dict({"text": texts, "label": labels}).save_to_disk(
        tmp_path / "reviews")
    pruned = tmp_path / "pruned.pt"
    code, _out, err = run_cli(["prune", folder, "--data", f"hf:{tmp_path / 'reviews'}",
                              "--max-length", "6", "--out", pruned, *PRUNE], capsys)
    assert code == 0, err
    loaded = read_model(pruned)
    assert loaded.example_inputs[0].dtype == torch.int64
    assert loaded.example_inputs[0].shape == (2, 6)
    assert loaded.history[-1]["remaining_weights"] < loaded.history[0]["remaining_weights"]
    assert _exported_error(pruned, tmp_path, capsys) <= 1e-4
    (folder / "model.safetensors").unlink()
    code, _, err = run_cli(["prune", folder, "--data", f"hf:{tmp_path / 'reviews'}",
                            "--out", tmp_path / "again.pt"], capsys)
    assert code == 2 and "no model.safetensors" in err


def test_prune_bad_model_inputs(tmp_path, capsys):
    spec = _table(tmp_path / "t.npz")
    (tmp_path / "folder").mkdir()
    for model, message in ((tmp_path / "folder", "not a Hugging Face model"),
                           (tmp_path / "t.npz", "neither a torch.save file")):
        code, _, err = run_cli(["prune", model, "--data", spec, "--out", tmp_path / "o.pt"],
                               capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    torch.onnx.export(_mlp(), (torch.rand(2, 6),), tmp_path / "m.onnx", dynamo=False)
    code, _, err = run_cli(["prune", tmp_path / "m.onnx", "--data", spec, "--task",
                            "regression", "--image-size", "3", "--out", tmp_path / "o.pt"],
                           capsys)
    assert code == 2 and "npz does not take option(s) image_size" in err

    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.mlp = _mlp()

        def forward(self, x, scale):
            return self.mlp(x) * scale

    torch.onnx.export(TwoInputs(), (torch.rand(2, 6), torch.rand(2, 1)), tmp_path / "two.onnx",
                      dynamo=False, input_names=["x", "scale"],
                      dynamic_axes={"x": {0: "b"}, "scale": {0: "b"}})
    np.savez(tmp_path / "narrow.npz", x=np.zeros((8, 5), np.float32), y=np.arange(8) % 2)
    # one input per sample for a model of two; 5 features for a model reading 6
    for model, wrong in ((tmp_path / "two.onnx", spec),
                         (tmp_path / "m.onnx", f"npz:{tmp_path}/narrow.npz")):
        code, _, err = run_cli(["prune", model, "--data", wrong, "--out", tmp_path / "o.pt"],
                               capsys)
        assert code == 2 and f"{model} does not run on the samples of --data" in err, err
        assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o.pt").exists()


def test_prune_an_onnx_token_model_on_npz_token_ids(tmp_path, capsys):
    """An ONNX file whose input is int64 token ids (an embedding table of 50): pruned on an
    npz of token ids, exported, and within 1e-4 of the pruned model in onnxruntime."""

    class Bag(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.fc1, self.fc2 = nn.Embedding(50, 16), nn.Linear(16, 32), \
                nn.Linear(32, 4)

        def forward(self, ids):
            return self.fc2(torch.relu(self.fc1(self.embed(ids))).mean(1))

    torch.manual_seed(0)
    source = tmp_path / "bag.onnx"
    torch.onnx.export(Bag().eval(), (torch.randint(0, 50, (2, 7)),), source, dynamo=False,
                      input_names=["ids"], dynamic_axes={"ids": {0: "b"}})
    ids = np.random.default_rng(0).integers(0, 50, (200, 7))
    np.savez(tmp_path / "ids.npz", x=ids, y=ids[:, 0] % 4)
    pruned = tmp_path / "bag.pt"
    code, _, err = run_cli(["prune", source, "--data", f"npz:{tmp_path}/ids.npz", *PRUNE,
                            "--out", pruned], capsys)
    assert code == 0, err
    loaded = read_model(pruned)
    assert loaded.example_inputs[0].dtype == torch.int64
    kept = [m.weight_mask.float().mean().item() for m in loaded.model.modules()
            if hasattr(m, "weight_mask")]
    assert kept and min(kept) < 1.0  # NNrelief removed connections
    out = tmp_path / "bag_pruned.onnx"
    assert run_cli([pruned, "--out", out], capsys)[0] == 0
    x = torch.from_numpy(ids[:16])
    runtime = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = runtime.run(None, {runtime.get_inputs()[0].name: x.numpy()})[0]
    want = outputs(loaded.model, x).numpy()
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


REMOTE_CONFIG = '''
from transformers import PretrainedConfig


class TinyConfig(PretrainedConfig):
    model_type = "tiny-remote"

    def __init__(self, vocab_size=30, hidden=8, labels=3, pad_token_id=0, **kwargs):
        self.vocab_size, self.hidden, self.labels = vocab_size, hidden, labels
        super().__init__(pad_token_id=pad_token_id, **kwargs)
'''
REMOTE_MODEL = '''
import torch
from torch import nn
from transformers import PreTrainedModel

from .configuration_tiny import TinyConfig


class TinyClassifier(PreTrainedModel):
    config_class = TinyConfig

    def __init__(self, config):
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.hidden)
        self.fc, self.out = nn.Linear(config.hidden, 16), nn.Linear(16, config.labels)
        self.post_init()

    def forward(self, input_ids, attention_mask=None):
        h = self.embed(input_ids) * attention_mask.unsqueeze(-1)
        return {"logits": self.out(torch.relu(self.fc(h)).sum(1))}
'''


def test_a_folder_with_its_own_code_needs_trust_remote_code(tmp_path, capsys):
    """A Hugging Face folder whose classes are its own code (auto_map): refused without
    --trust-remote-code at prune and again at export (the checkpoint rebuilds the class from
    the folder); with it, pruned and exported within 1e-4."""
    pytest.importorskip("transformers")
    from safetensors.torch import save_file

    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "configuration_tiny.py").write_text(REMOTE_CONFIG)
    (folder / "modeling_tiny.py").write_text(REMOTE_MODEL)
    (folder / "config.json").write_text(json.dumps({
        "model_type": "tiny-remote", "architectures": ["TinyClassifier"], "vocab_size": 30,
        "hidden": 8, "labels": 3, "pad_token_id": 0,
        "auto_map": {"AutoConfig": "configuration_tiny.TinyConfig",
                     "AutoModelForSequenceClassification": "modeling_tiny.TinyClassifier"}}))
    generator = torch.Generator().manual_seed(0)
    save_file({name: torch.randn(shape, generator=generator) for name, shape in (
        ("embed.weight", (30, 8)), ("fc.weight", (16, 8)), ("fc.bias", (16,)),
        ("out.weight", (3, 16)), ("out.bias", (3,)))}, folder / "model.safetensors")
    ids = np.random.default_rng(0).integers(1, 30, (120, 6))
    np.savez(tmp_path / "ids.npz", x=ids, y=ids[:, 0] % 3)
    pruned, out = tmp_path / "tiny.pt", tmp_path / "tiny.onnx"
    command = ["prune", folder, "--data", f"npz:{tmp_path}/ids.npz", *PRUNE, "--out", pruned]
    code, _, err = run_cli(command, capsys)
    assert code == 2 and "pass --trust-remote-code" in err and not pruned.exists()
    code, _, err = run_cli([*command, "--trust-remote-code"], capsys)
    assert code == 0, err
    code, _, err = run_cli([pruned, "--out", out], capsys)
    assert code == 2 and "code from" in err and "--trust-remote-code" in err
    assert not out.exists()
    assert _exported_error(pruned, tmp_path, capsys, ["--trust-remote-code"]) <= 1e-4
