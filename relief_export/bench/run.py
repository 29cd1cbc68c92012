"""``benchmark``: onnxruntime latency, throughput, size, MACs, memory and accuracy of ONNX files.

For every (threads, batch size) configuration, every model gets a fresh session with fixed
intra-op threads, ``warmup`` runs, then ``repeats`` runs interleaved across models (A B A B).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import ReliefError
from .graph_stats import GraphStats, graph_stats
from .latency import create_session, percentile, time_interleaved
from .memory import peak_memory
from .report import BenchReport, Measurement, ModelInfo


def benchmark(paths: list[str | Path], *, batch_sizes: tuple[int, ...] = (1, 8, 64),
              threads: tuple[int, ...] = (1,), warmup: int = 5, repeats: int = 30,
              data: str | None = None, progress: bool = True, seed: int = 0) -> BenchReport:
    """Measure every model in ``paths``; the first one is the baseline for speed-ups."""
    files = [Path(p) for p in paths]
    if not files:
        raise ReliefError("give at least one ONNX file to benchmark")
    if min(batch_sizes, default=0) < 1 or min(threads, default=0) < 1 or repeats < 1 \
            or warmup < 0:
        raise ReliefError("batch sizes, threads and repeats must be >= 1, warm-up >= 0")
    for path in files:
        if not path.is_file():
            raise ReliefError(f"{path}: no such file")
    stats = [graph_stats(p) for p in files]
    _check_signatures(files, stats)
    models = [ModelInfo(str(p), p.stat().st_size, s.parameters, s.nonzero, s.macs)
              for p, s in zip(files, stats, strict=True)]
    report = BenchReport(models, list(batch_sizes), list(threads), warmup, repeats)
    if data is not None:
        _accuracy(report, files, stats[0], data)
    rng = np.random.default_rng(seed)
    configurations = [(t, b) for t in threads for b in batch_sizes]
    for count, batch in tqdm(configurations, desc="benchmark", unit="config",
                             disable=None if progress else True):
        feed = rng.random((batch, *stats[0].input_shape), dtype=np.float32)
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
        info.memory_bytes = peak_memory(path, max(batch_sizes), max(threads))
    return report


def _check_signatures(files: list[Path], stats: list[GraphStats]) -> None:
    first = stats[0]
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
        info.accuracy = top1(session, stats.input_name, images.numpy(), labels.numpy())


def top1(session, input_name: str, images: np.ndarray, labels: np.ndarray,
         batch: int = 256) -> float:
    """Share of samples whose highest output is the label."""
    correct = 0
    for start in range(0, len(images), batch):
        logits = session.run(None, {input_name: images[start:start + batch]})[0]
        correct += int((logits.argmax(1) == labels[start:start + batch]).sum())
    return correct / len(images)
