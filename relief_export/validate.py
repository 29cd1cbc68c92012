"""Checks at the boundary (API arguments, checkpoint fields, CLI options): each raises one
ReliefError naming the field, what it got and what it accepts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .errors import ReliefError

MAX_SHAPE_RANK = 8
DEFAULT_MEMORY = 4 << 30


def integer(name: str, value: Any, low: int = 1, high: int | None = None) -> int:
    """``value`` as an int in [low, high]; bools and floats are refused."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ReliefError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ReliefError(f"{name} must be {bound}, got {value}")
    return int(value)


def integers(name: str, values: Any, low: int = 1, high: int | None = None,
             *, max_count: int = 64) -> tuple[int, ...]:
    """A non-empty sequence of ints, each in [low, high]."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values \
            or len(values) > max_count:
        raise ReliefError(f"{name} must be a list of 1 to {max_count} integers, got {values!r}")
    return tuple(integer(f"{name}[{i}]", v, low, high) for i, v in enumerate(values))


def number(name: str, value: Any, low: float, high: float, *, open_low: bool = False) -> float:
    """A finite float in [low, high] (or (low, high] with ``open_low``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value):
        raise ReliefError(f"{name} must be a number, got {value!r}")
    if value > high or value < low or (open_low and value == low):
        left = "(" if open_low else "["
        raise ReliefError(f"{name} must be in {left}{low}, {high}], got {value}")
    return float(value)


def choice(name: str, value: Any, options: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in options:
        raise ReliefError(f"{name} must be one of {', '.join(options)}, got {value!r}")
    return value


def flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ReliefError(f"{name} must be True or False, got {value!r}")
    return value


def module(name: str, value: Any, hint: str = "") -> nn.Module:
    if not isinstance(value, nn.Module):
        extra = f"; {hint}" if hint else ""
        raise ReliefError(f"{name} must be a torch nn.Module, got {type(value).__name__}{extra}")
    return value


def tensor(name: str, value: Any) -> torch.Tensor:
    """A dense CPU tensor with real data (not sparse, meta or a subclass)."""
    if not isinstance(value, torch.Tensor) or type(value) not in (torch.Tensor, nn.Parameter):
        raise ReliefError(f"{name} must be a tensor, got {type(value).__name__}")
    if value.layout != torch.strided or value.device.type != "cpu":
        raise ReliefError(f"{name} must be a dense CPU tensor, got layout {value.layout} on "
                          f"{value.device}")
    return value


def finite(name: str, value: torch.Tensor) -> torch.Tensor:
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        raise ReliefError(f"{name} holds NaN or infinite values")
    return value


def shape(name: str, value: Any, *, bytes_per_element: int = 4) -> list[int]:
    """A tensor shape (positive ints) whose float32 tensor fits in memory."""
    if isinstance(value, torch.Size):
        value = list(value)
    dims = list(integers(name, value, 1, None, max_count=MAX_SHAPE_RANK))
    allocation(f"a tensor of {name} {dims}", math.prod(dims) * bytes_per_element)
    return dims


def available_memory() -> int:
    """Bytes this process may still allocate (MemAvailable, else a 4 GiB guess)."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return DEFAULT_MEMORY


def allocation(what: str, nbytes: int) -> None:
    """Refuse to allocate more than half the available memory."""
    budget = available_memory() // 2
    if nbytes > budget:
        raise ReliefError(f"{what} needs {nbytes / 2**30:.1f} GiB, more than the "
                          f"{budget / 2**30:.1f} GiB this machine can spare; use a smaller size")


def device(name: str, value: Any) -> torch.device:
    """A torch device that exists here (cpu, or cuda[:N] when CUDA is available)."""
    try:
        parsed = torch.device(value)
    except (RuntimeError, TypeError):
        raise ReliefError(f"{name} must be cpu or cuda[:N], got {value!r}") from None
    if parsed.type == "cpu":
        return parsed
    if parsed.type != "cuda":
        raise ReliefError(f"{name} must be cpu or cuda[:N], got {value!r}")
    if not torch.cuda.is_available():
        raise ReliefError(f"{name} {value!r}: CUDA is not available on this machine")
    if parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise ReliefError(f"{name} {value!r}: only {torch.cuda.device_count()} CUDA device(s)")
    return parsed


def examples(example_inputs: Any) -> tuple[torch.Tensor, ...]:
    """One tensor or a tuple / list of tensors (float, or integer such as token ids), each
    with a batch axis."""
    items = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) \
        else (example_inputs,)
    if not items:
        raise ReliefError("example_inputs is empty: give one tensor per model input")
    for number, item in enumerate(items):
        name = "example_inputs" if len(items) == 1 else f"example_inputs[{number}]"
        if not isinstance(item, torch.Tensor):
            raise ReliefError(f"{name} must be a float or integer tensor, got "
                              f"{type(item).__name__}")
        if item.is_complex() or item.dtype == torch.bool:
            raise ReliefError(f"{name} must be a float or integer tensor, got {item.dtype}")
        if item.is_floating_point():
            finite(name, tensor(name, item))
        if item.dim() < 1 or item.shape[0] < 1:
            raise ReliefError(f"{name} must have a batch axis of size >= 1, got shape "
                              f"{list(item.shape)}")
    return tuple(item.detach() for item in items)
