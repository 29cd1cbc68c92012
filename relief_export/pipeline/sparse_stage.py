"""The sparse-compute stage of the export: its options, checked at the boundary, and the
pass followed by a whole-model check."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import onnx
import onnx_ir as ir
import torch

from .. import validate
from ..errors import ReliefError
from ..onnx.passes import SparseCompute
from ..onnx.quantize import quantize
from ..onnx.sparse.timing import ROUNDS, Setting, interleaved_ms
from ..onnx.sparse.timing_cache import check_cache_path, load_cache, machine_key
from ..runtime.seeded import random_like

SPARSE_COMPUTE = ("auto", "off")
MAX_TUNE_BATCH = 4096
MAX_TUNE_THREADS = 256


def sparse_settings(mode: str, batches: Sequence[int], threads: Sequence[int]
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


def tune_cache_file(settings: tuple[Setting, ...], path: str | Path | None) -> Path | None:
    """The timing cache file, checked before any work: writable, and readable when it exists
    (a damaged one is an error)."""
    if path is None:
        return None
    if not settings:
        raise ReliefError("--tune-cache applies to --sparse-compute auto only")
    target = check_cache_path(path)
    load_cache(target, machine_key(ROUNDS))
    return target


WHOLE_MODEL_PAIRS = 3  # fresh session pairs per setting: a session's own speed varies by 3%
WHOLE_MODEL_ROUNDS = 7  # rounds per pair
WHOLE_MODEL_MIN_MS = 200.0  # and at least this long per model and pair: batch-1 runs are short
WHOLE_MODEL_MARGIN = 0.98  # with covers, the model must take at most this of its time without
WHOLE_MODEL_TIE = 1.0  # at some setting, and at most this at every one


def sparse_compute_stage(exported: ir.Model, settings: tuple[Setting, ...],
                         examples: tuple[torch.Tensor, ...], dense_macs: dict[str, int],
                         progress: Callable[[str], None] | None = None,
                         cache_file: Path | None = None, int8_reduce_range: bool | None = None
                         ) -> tuple[ir.Model, dict[str, Any]]:
    """Covers chosen layer by layer, then the whole model timed with and without them at
    every setting (``covers_rejected``); the covers stay only if
    the model with them takes at most ``WHOLE_MODEL_MARGIN`` of the time without them at
    some setting (a gain beyond timing noise) and at most ``WHOLE_MODEL_TIE`` at every one.
    ``dense_macs``: per layer (module) name, its MACs per sample before compaction (matched
    to a layer by its weight's name);
    ``cache_file``: layer timings kept across exports; ``int8_reduce_range`` (None for an
    fp32 file): the layers are timed quantized as int8 export quantizes them, and the whole
    model is left for the int8 stage to time (``without_covers`` is kept for it)."""
    before = ir.to_proto(exported)
    int8 = None if int8_reduce_range is None else (
        "int8 7-bit" if int8_reduce_range else "int8",
        partial(quantize, method="minmax", reduce_range=int8_reduce_range))
    compute = SparseCompute(settings, progress=progress, cache_file=cache_file, int8=int8)
    compute(exported)
    for choice in compute.choices:
        choice.macs_dense = dense_macs.get(choice.weight.removesuffix(".weight"))
    record: dict[str, Any] = {"layers": [asdict(c) for c in compute.choices],
                              "whole_model_ms": {}, "kept": False}
    if not any(c.chosen == "cover" or c.crop for c in compute.choices):
        return exported, record
    if int8 is not None:
        record["kept"], record["without_covers"] = True, before
        return exported, record
    rejected = covers_rejected(before, ir.to_proto(exported), settings, examples,
                               record["whole_model_ms"])
    if rejected:
        drop_covers(record, rejected)
        return ir.serde.deserialize_model(before), record
    record["kept"], record["without_covers"] = True, before
    return exported, record


def covers_rejected(without: onnx.ModelProto, with_covers: onnx.ModelProto,
                    settings: tuple[Setting, ...], examples: tuple[torch.Tensor, ...],
                    times: dict[str, dict[str, float]], prefix: str = "") -> str | None:
    """Why ``with_covers`` is not kept, or None. At each setting, ``WHOLE_MODEL_PAIRS`` fresh
    session pairs each time both interleaved on the same seeded inputs (median of
    ``WHOLE_MODEL_ROUNDS`` rounds or of ``WHOLE_MODEL_MIN_MS`` of runs, whichever is more);
    the ratio there is the median of the pairs' with / without. It must be at most
    ``WHOLE_MODEL_TIE`` everywhere and at most ``WHOLE_MODEL_MARGIN`` somewhere. ``times``
    gets each setting's median ms of both."""
    names = [str(v.name) for v in without.graph.input
             if v.name not in {i.name for i in without.graph.initializer}]
    generator = torch.Generator().manual_seed(0)
    models = [without.SerializeToString(), with_covers.SerializeToString()]
    ratios = {}
    for setting in settings:
        feed = {name: random_like(x, setting.batch, generator, "normal").numpy()
                for name, x in zip(names, examples, strict=True)}
        pairs = [interleaved_ms(models, [feed, feed], setting.threads, WHOLE_MODEL_ROUNDS,
                                WHOLE_MODEL_MIN_MS) for _ in range(WHOLE_MODEL_PAIRS)]
        times[prefix + setting.label] = {
            "off": round(statistics.median(off for off, _ in pairs), 4),
            "auto": round(statistics.median(auto for _, auto in pairs), 4)}
        ratios[prefix + setting.label] = statistics.median(auto / off for off, auto in pairs)
    slower = [label for label, ratio in ratios.items() if ratio > WHOLE_MODEL_TIE]
    if slower:
        return "the whole model measured slower with the covers at " + ", ".join(slower)
    if min(ratios.values()) > WHOLE_MODEL_MARGIN:
        return "the whole model measured no faster with the covers at any setting"
    return None


def drop_covers(record: dict[str, Any], why: str) -> None:
    """Mark every covered layer of ``record`` dense again, saying why."""
    record["kept"] = False
    for layer in record["layers"]:
        layer["crop"], layer["macs_cropped"] = "", None
        if layer["chosen"] == "cover":
            layer["chosen"], layer["why"] = "dense", why

