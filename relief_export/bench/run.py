"""``benchmark``: onnxruntime latency, throughput, size, MACs, memory and accuracy of ONNX files.

For every (threads, batch size) configuration, every model gets a fresh session with fixed
intra-op threads, ``warmup`` runs, then ``repeats`` runs interleaved across models (A B A B).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .. import validate
from ..errors import ReliefError, first_line
from ..progress import progress as show_progress
from .graph_stats import GraphStats, graph_stats, timing_batch, timing_problem
from .latency import create_session, percentile, time_interleaved
from .machine import machine_info
from .memory import peak_memory
from .report import BenchReport, Measurement, ModelInfo

MAX_BATCH = 1 << 16
MAX_THREADS = 256
MAX_REPEATS = 100_000


def benchmark(paths: list[str | Path], *, batch_sizes: tuple[int, ...] = (1, 8, 64),
              threads: tuple[int, ...] = (1,), warmup: int = 5, repeats: int = 30,
              data: str | None = None, progress: bool = True, seed: int = 0,
              memory: bool = True) -> BenchReport:
    """Measure every model in ``paths``; the first one is the baseline for speed-ups.
    ``memory``: also measure peak memory (two child processes per model)."""
    files = _files(paths)
    batch_sizes = validate.integers("batch_sizes", batch_sizes, 1, MAX_BATCH)
    threads = validate.integers("threads", threads, 1, MAX_THREADS)
    validate.integer("warmup", warmup, 0, MAX_REPEATS)
    validate.integer("repeats", repeats, 1, MAX_REPEATS)
    validate.integer("seed", seed, 0, 2**32 - 1)
    validate.flag("progress", progress)
    validate.flag("memory", memory)
    stats = [graph_stats(p) for p in files]
    _check_signatures(files, stats, batch_sizes)
    models = [ModelInfo(str(p), s.file_bytes, s.parameters, s.nonzero, s.macs,
                        precision=s.precision) for p, s in zip(files, stats, strict=True)]
    report = BenchReport(models, list(batch_sizes), list(threads), warmup, repeats,
                         machine=machine_info())
    if data is not None:
        _accuracy(report, files, stats[0], data)
    rng = np.random.default_rng(seed)
    configurations = [(t, b) for t in threads for b in batch_sizes]
    for count, batch in show_progress(configurations, desc="benchmark", unit="config",
                                      enabled=progress):
        feed = timing_batch(stats[0], batch, rng)
        sessions, created = {}, {}
        for path in files:
            sessions[str(path)], created[str(path)] = create_session(str(path), count)
        times = time_interleaved(sessions, feed, warmup, repeats)
        for name, samples in times.items():
            median = percentile(samples, 50)
            report.measurements.append(Measurement(
                name, count, batch, 1e3 * median, 1e3 * percentile(samples, 90),
                1e3 * percentile(samples, 99), batch / median, 1e3 * created[name]))
        del sessions
    for path, info in zip(files, models, strict=True):
        info.memory_bytes = peak_memory(path, max(batch_sizes), max(threads)) if memory else None
    return report


def _files(paths: Any) -> list[Path]:
    if isinstance(paths, (str, Path)) or not isinstance(paths, (list, tuple)) or not paths:
        raise ReliefError(f"paths must be a non-empty list of ONNX files, got {paths!r}")
    files = []
    for path in paths:
        if not isinstance(path, (str, Path)) or not Path(path).is_file():
            raise ReliefError(f"{path}: no such file")
        files.append(Path(path))
    return files


def _check_signatures(files: list[Path], stats: list[GraphStats],
                      batch_sizes: tuple[int, ...]) -> None:
    first = stats[0]
    for path, info in zip(files, stats, strict=True):
        problem = timing_problem(path, info)
        if problem is not None:
            raise ReliefError(problem)
        if info.fixed_batch is not None and set(batch_sizes) != {info.fixed_batch}:
            raise ReliefError(f"{path}: the model has a fixed batch size of {info.fixed_batch}; "
                              f"pass --batch {info.fixed_batch} (or export it with a dynamic "
                              "batch axis)")
    validate.allocation(f"a batch of {max(batch_sizes)} inputs of shape {first.input_shape}",
                        4 * max(batch_sizes) * math.prod(first.input_shape))
    for path, other in zip(files[1:], stats[1:], strict=True):
        if (other.input_shape, other.input_type) != (first.input_shape, first.input_type):
            raise ReliefError(f"{path}: input {other.input_shape} (type {other.input_type}) "
                              f"differs from {files[0]}'s {first.input_shape} (type "
                              f"{first.input_type}); only models with the same input can be "
                              "compared")


def _accuracy(report: BenchReport, files: list[Path], stats: GraphStats, spec: str) -> None:
    from .. import data as datasets

    images, labels = datasets.load(spec, "test").tensors()
    if tuple(images.shape[1:]) != stats.input_shape:
        raise ReliefError(f"--data {spec}: samples of shape {tuple(images.shape[1:])} do not "
                          f"fit the models' input {stats.input_shape}")
    for path, info in zip(files, report.models, strict=True):
        session, _ = create_session(str(path), 0)
        try:
            info.accuracy = top1(session, stats.input_name, images.numpy(), labels.numpy(),
                                 stats.fixed_batch or 256, whole_batches=bool(stats.fixed_batch))
        except Exception as error:  # onnxruntime's own exception types, or odd outputs
            raise ReliefError(f"{path}: cannot measure accuracy on {spec} "
                              f"({first_line(error)})") from None


def top1(session, input_name: str, images: np.ndarray, labels: np.ndarray,
         batch: int = 256, *, whole_batches: bool = False) -> float:
    """Share of samples whose highest output is the label (``whole_batches``: only full
    batches, for models with a fixed batch size)."""
    usable = len(images) - len(images) % batch if whole_batches else len(images)
    if usable < 1:
        raise ValueError(f"fewer samples than one batch of {batch}")
    correct = 0
    for start in range(0, usable, batch):
        logits = session.run(None, {input_name: images[start:start + batch]})[0]
        if logits.ndim != 2:
            raise ValueError(f"output of shape {logits.shape} is not [batch, classes]")
        correct += int((logits.argmax(1) == labels[start:start + batch]).sum())
    return correct / usable
