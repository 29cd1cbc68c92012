"""The sparse-compute stage of the export: its options, checked at the boundary."""

from __future__ import annotations

from collections.abc import Sequence

from .. import validate
from ..errors import ReliefError
from ..onnx.sparse.timing import Setting

SPARSE_COMPUTE = ("auto", "off")
MAX_TUNE_BATCH = 4096
MAX_TUNE_THREADS = 256


def sparse_settings(mode: str, batches: Sequence[int], threads: Sequence[int], int8: bool
                    ) -> tuple[Setting, ...]:
    """The (batch, threads) settings to time, or () when sparse compute is off."""
    validate.choice("sparse_compute", mode, list(SPARSE_COMPUTE))
    for name, values, limit in (("tune_batches", batches, MAX_TUNE_BATCH),
                                ("tune_threads", threads, MAX_TUNE_THREADS)):
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ReliefError(f"{name} must be a non-empty list of integers, got {values!r}")
        for value in values:
            validate.integer(name, value, 1, limit)
    if mode == "off":
        return ()
    return tuple(Setting(b, t) for b in dict.fromkeys(batches) for t in dict.fromkeys(threads))
