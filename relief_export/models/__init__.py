"""The model zoo: ``build(name, num_classes=10, in_channels=...)`` and ``names()``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from .. import validate
from ..errors import ReliefError
from .lenet import lenet5, lenet300_100
from .resnet import resnet
from .resnet_cifar import cifar_resnet
from .vgg import vgg

__all__ = ["build", "input_shape", "names"]

MAX_CLASSES = 1_000_000
MAX_CHANNELS = 4096


@dataclass(frozen=True)
class _Entry:
    factory: Callable[..., nn.Module]
    in_channels: int
    image_size: int


_ZOO: dict[str, _Entry] = {
    "lenet300_100": _Entry(lenet300_100, 1, 28),
    "lenet5": _Entry(lenet5, 1, 28),
    **{name: _Entry(partial(vgg, name), 3, 32)
       for name in ("vgg11", "vgg13", "vgg16", "vgg19", "vgg_like")},
    **{f"resnet{d}": _Entry(partial(cifar_resnet, d), 3, 32) for d in (20, 32, 44, 56, 110)},
    "resnet18": _Entry(partial(resnet, 18), 3, 64),
    "resnet34": _Entry(partial(resnet, 34), 3, 64),
}


def names() -> list[str]:
    """All architecture names that ``build`` accepts."""
    return list(_ZOO)


def _entry(name: str) -> _Entry:
    if not isinstance(name, str) or name not in _ZOO:
        raise ReliefError(f"unknown architecture {name!r}; choose one of: {', '.join(_ZOO)}")
    return _ZOO[name]


def build(name: str, *, num_classes: int = 10, in_channels: int | None = None) -> nn.Module:
    """A freshly initialised zoo model (Kaiming-normal conv/linear weights, zero biases)."""
    entry = _entry(name)
    validate.integer("num_classes", num_classes, 1, MAX_CLASSES)
    channels = entry.in_channels if in_channels is None else in_channels
    validate.integer("in_channels", channels, 1, MAX_CHANNELS)
    with torch.device("meta"):
        parameters = sum(p.numel() for p in entry.factory(
            num_classes=num_classes, in_channels=channels).parameters())
    validate.allocation(f"{name} with {num_classes} classes", 4 * parameters)
    model = entry.factory(num_classes=num_classes, in_channels=channels)
    model.apply(_kaiming_init)
    return model


def input_shape(name: str, *, in_channels: int | None = None, batch: int = 1) -> list[int]:
    """The NCHW input shape the architecture is built for."""
    entry = _entry(name)
    channels = entry.in_channels if in_channels is None else in_channels
    return [batch, channels, entry.image_size, entry.image_size]


def _kaiming_init(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
