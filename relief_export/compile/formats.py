"""Compact, exact encodings of one weight tensor (pure numpy; the ONNX decoders mirror them).

- dense: the values as they are.
- csr: row-major nonzeros with column indices of the narrowest unsigned type and row
  pointers; the row of each nonzero is recovered by a scatter-add of ones at the row starts
  and a cumulative sum.
- delta: nonzeros in row-major order with the gap to the previous one (position + 1 for the
  first) in uint8; a gap over 255 is bridged by escape entries (gap 255, value 0), which write
  a zero where there is one already. No row pointers: positions run across rows.
- bsr: for conv weights [O, I, kh, kw] whose sparsity is whole kernel slices (NNrelief's
  connections): the nonzero slices [n, kh * kw] and their positions in the O x I grid as gaps
  (uint8, or uint16 when a gap exceeds 255).
- bitmask: one bit per entry (numpy.packbits order: most significant bit first) + nonzeros.

Every encoding stores only arrays; ``decode`` rebuilds the dense tensor exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FORMATS = ("dense", "csr", "delta", "bsr", "bitmask")


@dataclass
class Encoded:
    """An encoded tensor: its format, original shape and the arrays that store it."""

    format: str
    shape: tuple[int, ...]
    arrays: dict[str, np.ndarray]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())


def narrowest_unsigned(maximum: int) -> type[np.unsignedinteger]:
    for dtype in (np.uint8, np.uint16, np.uint32):
        if maximum <= np.iinfo(dtype).max:
            return dtype
    return np.uint64


def encode(tensor: np.ndarray, format: str, value_dtype=np.float32) -> Encoded | None:
    """``tensor`` in ``format`` (values cast to ``value_dtype``); None if it does not apply."""
    values = tensor.astype(value_dtype)
    if format == "dense":
        return Encoded("dense", tensor.shape, {"values": values})
    if format == "csr":
        return _csr(values)
    if format == "delta":
        return _delta(values)
    if format == "bsr":
        return _bsr(values)
    if format == "bitmask":
        flat = values.reshape(-1)
        return Encoded("bitmask", tensor.shape, {"bits": np.packbits(flat != 0),
                                                 "values": flat[flat != 0]})
    raise ValueError(f"unknown format {format!r}")


def _matrix(values: np.ndarray) -> np.ndarray:
    return values.reshape(values.shape[0], -1) if values.ndim > 1 else values.reshape(1, -1)


def _csr(values: np.ndarray) -> Encoded:
    matrix = _matrix(values)
    rows, cols = np.nonzero(matrix)
    counts = np.bincount(rows, minlength=matrix.shape[0])
    pointers = np.concatenate([[0], np.cumsum(counts)])
    return Encoded("csr", values.shape, {
        "values": matrix[rows, cols],
        "columns": cols.astype(narrowest_unsigned(max(matrix.shape[1] - 1, 0))),
        "row_pointers": pointers.astype(narrowest_unsigned(int(pointers[-1])))})


def _gaps(positions: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaps between increasing positions (first: position + 1), split into steps <= limit.

    Returns the gaps and, per gap, the index of the real entry it ends on (-1 for escapes).
    """
    gaps = np.diff(np.concatenate([[-1], positions]))
    pieces = np.maximum(1, -(-gaps // limit))  # ceil(gap / limit)
    total = int(pieces.sum())
    out = np.full(total, limit, dtype=np.int64)
    owner = np.full(total, -1, dtype=np.int64)
    ends = np.cumsum(pieces) - 1
    out[ends] = gaps - (pieces - 1) * limit
    owner[ends] = np.arange(len(gaps))
    return out, owner


def _delta(values: np.ndarray) -> Encoded:
    flat = values.reshape(-1)
    positions = np.flatnonzero(flat)
    gaps, owner = _gaps(positions, 255)
    stored = np.zeros(len(gaps), dtype=values.dtype)
    stored[owner >= 0] = flat[positions]
    return Encoded("delta", values.shape, {"gaps": gaps.astype(np.uint8), "values": stored})


def _bsr(values: np.ndarray) -> Encoded | None:
    if values.ndim != 4:
        return None
    grid = values.reshape(values.shape[0] * values.shape[1], -1)
    blocks = np.flatnonzero((grid != 0).any(1))
    gaps = np.diff(np.concatenate([[-1], blocks]))
    dtype = np.uint8 if gaps.size == 0 or gaps.max() <= 255 else \
        narrowest_unsigned(int(gaps.max()))
    return Encoded("bsr", values.shape, {"gaps": gaps.astype(dtype), "blocks": grid[blocks]})


def decode(encoded: Encoded) -> np.ndarray:
    """The dense float32 tensor (the reference the ONNX decoders are tested against)."""
    size = int(np.prod(encoded.shape))
    a = encoded.arrays
    dense = np.zeros(size, dtype=np.float32)
    if encoded.format == "dense":
        return a["values"].astype(np.float32).reshape(encoded.shape)
    if encoded.format == "csr":
        rows = len(a["row_pointers"]) - 1
        cols = size // max(rows, 1)
        counts = np.diff(a["row_pointers"].astype(np.int64)).astype(np.int64)
        row_ids = np.repeat(np.arange(rows), counts)
        dense[row_ids * cols + a["columns"].astype(np.int64)] = a["values"]
    elif encoded.format == "delta":
        dense[np.cumsum(a["gaps"].astype(np.int64)) - 1] = a["values"]
    elif encoded.format == "bsr":
        block = a["blocks"].shape[1] if a["blocks"].ndim == 2 else 1
        grid = dense.reshape(-1, block)
        grid[np.cumsum(a["gaps"].astype(np.int64)) - 1] = a["blocks"]
    elif encoded.format == "bitmask":
        mask = np.unpackbits(a["bits"])[:size].astype(bool)
        dense[mask] = a["values"]
    return dense.reshape(encoded.shape)


def smallest(tensor: np.ndarray, candidates: tuple[str, ...] = FORMATS,
             value_dtype=np.float32) -> Encoded:
    """The smallest applicable encoding among ``candidates`` (dense when nothing beats it)."""
    options = [e for f in candidates if (e := encode(tensor, f, value_dtype)) is not None]
    return min(options, key=lambda e: (e.nbytes, FORMATS.index(e.format)))
