"""Architecture families the channel interpreter is measured on, and the masks put on them.

Hand-written blocks people deploy (an inverted residual with depthwise conv and ReLU6, a
squeeze-and-excitation block, a DenseNet concat block, a small UNet with ConvTranspose2d and a
skip concat, a Conv1d audio model, a model calling F.linear on its own parameters, the
authors' option-A CIFAR ResNet-20 saved as .pt2) and Hugging Face ``transformers`` models
built from small configs with random init (ResNet, MobileNetV2, ConvNeXt, ViT, BERT with
integer token ids; needs the package, no download).

Three kinds of masks (``MASKS``): torch.nn.utils.prune.l1_unstructured at 90%; ln_structured
on 50% of each layer's filters with random BatchNorm / LayerNorm statistics and biases, so that
dead units emit nonzero constants; zeros written straight into half of the units' weights.
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

Inputs = tuple[torch.Tensor, ...]
LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expand, depthwise 3x3, 1x1 project (BatchNorm, ReLU6), + x."""

    def __init__(self, channels: int = 8, expand: int = 4):
        super().__init__()
        hidden = channels * expand
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels), nn.ReLU6())
        self.expand = nn.Sequential(nn.Conv2d(channels, hidden, 1, bias=False),
                                    nn.BatchNorm2d(hidden), nn.ReLU6())
        self.depthwise = nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden,
                                                 bias=False), nn.BatchNorm2d(hidden), nn.ReLU6())
        self.project = nn.Sequential(nn.Conv2d(hidden, channels, 1, bias=False),
                                     nn.BatchNorm2d(channels))
        self.head = nn.Linear(channels, 10)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.project(self.depthwise(self.expand(x)))
        return self.head(x.mean((2, 3)))


class SqueezeExcitation(nn.Module):
    """x * sigmoid(fc(relu(fc(pool(x))))) between two convolutions."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.squeeze, self.excite = nn.Linear(16, 4), nn.Linear(4, 16)
        self.conv2, self.head = nn.Conv2d(16, 16, 3, padding=1), nn.Linear(16, 10)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        gate = torch.sigmoid(self.excite(F.relu(self.squeeze(y.mean((2, 3))))))
        y = F.relu(self.conv2(y * gate.view(-1, 16, 1, 1)))
        return self.head(F.adaptive_avg_pool2d(y, 1).flatten(1))


class DenseBlock(nn.Module):
    """DenseNet: every layer's output is concatenated to its input along channels."""

    def __init__(self, growth: int = 6, layers: int = 3):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.layers = nn.ModuleList(
            nn.Sequential(nn.BatchNorm2d(8 + i * growth), nn.ReLU(),
                          nn.Conv2d(8 + i * growth, growth, 3, padding=1))
            for i in range(layers))
        self.head = nn.Linear(8 + layers * growth, 10)

    def forward(self, x):
        x = self.stem(x)
        for layer in self.layers:
            x = torch.cat([x, layer(x)], 1)
        return self.head(x.mean((2, 3)))


class SmallUNet(nn.Module):
    """Two levels: strided conv down, ConvTranspose2d up, skip concat, 1x1 head."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.down = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.dec = nn.Sequential(nn.Conv2d(16, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        skip = self.enc(x)
        y = F.relu(self.up(self.down(skip)))
        return self.head(self.dec(torch.cat([y, skip], 1)))


class AudioConv1d(nn.Module):
    """Conv1d stack over a waveform-like [batch, channels, time] input."""

    def __init__(self):
        super().__init__()
        self.c1, self.bn1 = nn.Conv1d(1, 16, 9, stride=2, padding=4), nn.BatchNorm1d(16)
        self.c2, self.bn2 = nn.Conv1d(16, 32, 5, padding=2), nn.BatchNorm1d(32)
        self.c3 = nn.Conv1d(32, 32, 3, padding=1)
        self.head = nn.Linear(32, 5)

    def forward(self, x):
        x = F.max_pool1d(F.relu(self.bn1(self.c1(x))), 2)
        x = F.relu(self.bn2(self.c2(x)))
        return self.head(F.relu(self.c3(x)).mean(-1))


class FunctionalMlp(nn.Module):
    """F.linear on the model's own parameters (no nn.Linear modules)."""

    def __init__(self):
        super().__init__()
        self.w1, self.b1 = nn.Parameter(torch.randn(64, 32) * 0.2), nn.Parameter(torch.zeros(64))
        self.w2, self.b2 = nn.Parameter(torch.randn(10, 64) * 0.2), nn.Parameter(torch.zeros(10))

    def forward(self, x):
        return F.linear(F.gelu(F.linear(x, self.w1, self.b1)), self.w2, self.b2)


def _resnet20() -> nn.Module:
    from ..models import build

    return build("resnet20")


def _hf(kind: str) -> nn.Module:
    import transformers as hf

    configs: dict[str, Callable[[], nn.Module]] = {
        "resnet": lambda: hf.ResNetModel(hf.ResNetConfig(
            embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], num_channels=3)),
        "mobilenetv2": lambda: hf.MobileNetV2Model(hf.MobileNetV2Config(
            image_size=32, depth_multiplier=0.35)),
        "convnext": lambda: hf.ConvNextModel(hf.ConvNextConfig(
            hidden_sizes=[16, 32], depths=[1, 1], num_stages=2, image_size=32)),
        "vit": lambda: hf.ViTModel(hf.ViTConfig(
            image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=64)),
        "bert": lambda: hf.BertModel(hf.BertConfig(
            vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=64)),
    }
    return configs[kind]()


def _images(channels: int = 3, size: int = 32) -> Callable[[torch.Generator], Inputs]:
    return lambda g: (torch.randn(2, channels, size, size, generator=g),)


@dataclass(frozen=True)
class Family:
    """How to build a model and its example inputs; ``archive``: measured through a .pt2."""

    build: Callable[[], nn.Module]
    inputs: Callable[[torch.Generator], Inputs]
    archive: bool = False
    needs: str | None = None  # a package the family needs


FAMILIES: dict[str, Family] = {
    "inverted residual (depthwise, ReLU6)": Family(InvertedResidual, _images()),
    "squeeze-and-excitation": Family(SqueezeExcitation, _images()),
    "DenseNet concat block": Family(DenseBlock, _images()),
    "UNet (ConvTranspose2d, skip concat)": Family(SmallUNet, _images()),
    "Conv1d audio": Family(AudioConv1d, lambda g: (torch.randn(2, 1, 256, generator=g),)),
    "F.linear on own parameters": Family(FunctionalMlp,
                                         lambda g: (torch.randn(2, 32, generator=g),)),
    "option-A ResNet-20 (.pt2)": Family(_resnet20, _images(), archive=True),
    "HF ResNet": Family(lambda: _hf("resnet"), _images(), needs="transformers"),
    "HF MobileNetV2": Family(lambda: _hf("mobilenetv2"), _images(), needs="transformers"),
    "HF ConvNeXt": Family(lambda: _hf("convnext"), _images(), needs="transformers"),
    "HF ViT": Family(lambda: _hf("vit"), _images(), needs="transformers"),
    "HF BERT (token ids)": Family(
        lambda: _hf("bert"), lambda g: (torch.randint(0, 100, (2, 12), generator=g),),
        needs="transformers"),
}


def available(family: Family) -> bool:
    return family.needs is None or importlib.util.find_spec(family.needs) is not None


def _weights(model: nn.Module) -> list[tuple[nn.Module, str, int]]:
    """(module, parameter name, unit axis) of every layer weight, F.linear ones included."""
    found: list[tuple[nn.Module, str, int]] = []
    for module in model.modules():
        if isinstance(module, LAYERS):
            found.append((module, "weight", 1 if isinstance(module, nn.ConvTranspose2d) else 0))
        elif isinstance(module, FunctionalMlp):
            found += [(module, "w1", 0), (module, "w2", 0)]
    return found


def _l1(model: nn.Module, generator: torch.Generator) -> None:
    for module, name, _axis in _weights(model):
        prune.l1_unstructured(module, name, 0.9)


def _ln(model: nn.Module, generator: torch.Generator) -> None:
    with torch.no_grad():
        for module, name, axis in _weights(model):
            if getattr(module, name).shape[axis] > 1:
                prune.ln_structured(module, name, 0.5, n=2, dim=axis)
            bias = getattr(module, "bias" if name == "weight" else "b" + name[1:], None)
            if isinstance(bias, torch.Tensor):
                bias.uniform_(-0.5, 0.5, generator=generator)
        for module in model.modules():
            if isinstance(module, NORMS):
                mean, var = (getattr(module, n, None) for n in ("running_mean", "running_var"))
                if isinstance(mean, torch.Tensor) and isinstance(var, torch.Tensor):
                    mean.normal_(0, 0.5, generator=generator)
                    var.uniform_(0.5, 1.5, generator=generator)
                if getattr(module, "weight", None) is not None:
                    module.weight.normal_(1, 0.3, generator=generator)
                    module.bias.normal_(0, 0.5, generator=generator)


def _zeros(model: nn.Module, generator: torch.Generator) -> None:
    with torch.no_grad():
        for module, name, axis in _weights(model):
            weight = getattr(module, name)
            if weight.shape[axis] < 2:
                continue
            dead = torch.rand(weight.shape[axis], generator=generator) < 0.5
            weight.index_fill_(axis, torch.nonzero(dead).flatten(), 0.0)
            bias = getattr(module, "bias" if name == "weight" else "b" + name[1:], None)
            if isinstance(bias, torch.Tensor):
                bias[dead] = 0


MASKS: dict[str, Callable[[nn.Module, torch.Generator], None]] = {
    "l1 90%": _l1, "ln 50% + BN/LN": _ln, "zeros 50%": _zeros}


def masked(name: str, mask: str, seed: int = 0) -> tuple[nn.Module, Inputs]:
    """The family's model (seeded init, eval mode) under ``mask``, and example inputs."""
    family = FAMILIES[name]
    torch.manual_seed(seed)
    model = family.build().eval()
    generator = torch.Generator().manual_seed(seed + 1)
    MASKS[mask](model, generator)
    return model, family.inputs(generator)


def measure(name: str, mask: str, seed: int = 0) -> dict[str, Any]:
    """Compaction and export of one family under one mask: how it was captured, dead units
    (constant outputs) and how many of them were removed, parameters, errors, seconds."""
    from .. import compact_with_report, export_onnx

    model, inputs = masked(name, mask, seed)
    start = time.perf_counter()
    source: Any = model
    with tempfile.TemporaryDirectory() as folder:
        if FAMILIES[name].archive:
            source = Path(folder) / "model.pt2"
            torch.export.save(torch.export.export(model, inputs), source)
            from ..inputs import read_model

            report = compact_with_report(read_model(source).model, inputs)[1]
        else:
            report = compact_with_report(model, inputs)[1]
        exported = export_onnx(source, Path(folder) / "model.onnx", example_inputs=inputs,
                               align=1)
    dead = sum(layer.removed_zero + layer.removed_constant_folded + layer.kept_constant
               for layer in report.layers)
    removed = sum(layer.removed_zero + layer.removed_constant_folded for layer in report.layers)
    return {"family": name, "mask": mask, "captured": report.captured,
            "dead units": dead, "dead removed": removed,
            "parameters before": report.params_before, "parameters after": report.params_after,
            "error torch": report.max_relative_error,
            "error onnxruntime": max(c["relative"] for c in exported.verification),
            "left whole": [note for note in report.notes if note.startswith(("left", "kept"))],
            "seconds": time.perf_counter() - start}
