"""Seeded random inputs shaped like example inputs (compaction's and export's verification)."""

from __future__ import annotations

import torch


def random_like(example: torch.Tensor, batch: int, generator: torch.Generator,
                kind: str) -> torch.Tensor:
    """``batch`` samples shaped like ``example``'s: floats N(0, 1) (``kind`` "normal") or
    U(0, 1) ("uniform"); integers (token ids) uniform over the example's range."""
    shape = (batch, *example.shape[1:])
    if example.is_floating_point():
        draw = torch.randn if kind == "normal" else torch.rand
        return draw(shape, generator=generator, dtype=example.dtype)
    low, high = (int(example.min()), int(example.max()) + 1) if example.numel() else (0, 1)
    return torch.randint(low, high, shape, generator=generator, dtype=example.dtype)
