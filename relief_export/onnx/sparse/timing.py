"""The cost model: a candidate form of one layer is timed in onnxruntime, on this machine, as
a model of its own (the layer's input of the measured shape in, its output out).

Each (candidate, batch size, thread count) is timed interleaved with the others of its layer:
``ROUNDS`` rounds (more, up to ``MAX_ROUNDS``, until each has run ``MIN_MS``), each running
every candidate once after a warm-up, and the median of the rounds is its time. Times are
cached by the candidate's structure (op, attributes, input shape, block sizes): a network with
repeated layer shapes is timed once per shape; with a cache file (``timing_cache``) the times
outlive the export. ``in_context`` puts a Conv candidate between two 1x1 Convs, the layout
onnxruntime gives it in a network.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from ...runtime.ort import session
from .build import Writer
from .timing_cache import load_cache, machine_key, save_cache

ROUNDS = 7
WARMUP = 2
MAX_ROUNDS = 400
IN_CONTEXT = "in context"  # a Conv candidate timed between two Convs (in_context)
MIN_MS = 20.0  # a candidate runs at least this long in all (a small layer's runs are short)


@dataclass(frozen=True)
class Setting:
    batch: int
    threads: int

    @property
    def label(self) -> str:
        return f"batch {self.batch}, {self.threads} thread(s)"


@dataclass
class Timer:
    """Times candidate graphs; ``cache`` maps a structure key and setting to milliseconds,
    read from and written back to ``cache_file`` when one is named."""

    settings: tuple[Setting, ...]
    cache_file: Path | None = None
    cache: dict[tuple[str, Setting], float] = field(default_factory=dict)
    timed: int = 0  # candidate graphs actually run

    def __post_init__(self) -> None:
        if self.cache_file is not None:
            stored = load_cache(self.cache_file, machine_key(ROUNDS))
            self.cache.update({(key, Setting(b, t)): ms for (key, b, t), ms in stored.items()})

    def times(self, candidates: Sequence[tuple[str, Callable[[], ir.Model]]],
              input_shape: Sequence[int], dtype: type = np.float32
              ) -> list[dict[Setting, float]]:
        """Per candidate (key, maker of its single-input model, called only when the key is
        not cached), its milliseconds per setting."""
        result: list[dict[Setting, float]] = [{} for _ in candidates]
        made: dict[int, ir.Model] = {}
        for setting in self.settings:
            missing = [i for i, (key, _) in enumerate(candidates)
                       if (key, setting) not in self.cache]
            for i in missing:
                if i not in made:
                    made[i] = candidates[i][1]()
            if missing:
                measured = _interleaved([made[i] for i in missing],
                                        [setting.batch, *input_shape[1:]], setting.threads,
                                        dtype)
                self.timed += len(missing)
                for i, ms in zip(missing, measured, strict=True):
                    self.cache[(candidates[i][0], setting)] = ms
            for i, (key, _) in enumerate(candidates):
                result[i][setting] = self.cache[(key, setting)]
        return result

    def save(self) -> None:
        """Write the times to ``cache_file`` (when named and something new was timed)."""
        if self.cache_file is not None and self.timed:
            save_cache(self.cache_file, machine_key(ROUNDS),
                       {(key, s.batch, s.threads): ms for (key, s), ms in self.cache.items()})


def _interleaved(models: list[ir.Model], shape: list[int], threads: int, dtype: type
                 ) -> list[float]:
    feed: np.ndarray = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    protos = [ir.to_proto(m).SerializeToString() for m in models]
    names = [str(m.graph.inputs[0].name) for m in models]
    return interleaved_ms(protos, [{name: feed} for name in names], threads, ROUNDS, MIN_MS)


def interleaved_ms(models: Sequence[bytes], feeds: Sequence[dict[str, np.ndarray]],
                   threads: int, rounds: int, min_ms: float = 0.0) -> list[float]:
    """Median milliseconds per run of each model on its feeds, timed round-robin after
    ``WARMUP`` untimed rounds: ``rounds`` rounds, or more (up to ``MAX_ROUNDS``) so that the
    slowest model runs for at least ``min_ms`` in all (short runs are noisy)."""
    sessions = [session(m, threads=threads) for m in models]
    slowest = 0.0
    for s, feed in zip(sessions, feeds, strict=True):
        for _ in range(WARMUP):
            start = time.perf_counter()
            s.run(None, feed)
        slowest = max(slowest, (time.perf_counter() - start) * 1000)
    rounds = min(max(rounds, math.ceil(min_ms / max(slowest, 1e-3))), max(rounds, MAX_ROUNDS))
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(rounds):
        for i, (s, feed) in enumerate(zip(sessions, feeds, strict=True)):
            start = time.perf_counter()
            s.run(None, feed)
            times[i].append((time.perf_counter() - start) * 1000)
    return [statistics.median(t) for t in times]


def single_layer_model(build: Callable[[ir.Graph, ir.Value], ir.Value],
                       input_shape: Sequence[int], opset: int) -> ir.Model:
    """A model around ``build(graph, x) -> output value`` with one float input of
    ``input_shape`` (batch dynamic)."""
    x = ir.Value(name="x", shape=ir.Shape(["batch", *input_shape[1:]]),
                 type=ir.TensorType(ir.DataType.FLOAT))
    graph = ir.Graph([x], [], nodes=[], opset_imports={"": opset}, name="candidate")
    output = build(graph, x)
    graph.outputs.append(output)
    return ir.Model(graph, ir_version=min(onnx.IR_VERSION, 10))


def in_context(build: Callable[[ir.Graph, ir.Value], ir.Value], channels_in: int,
               channels_out: int) -> Callable[[ir.Graph, ir.Value], ir.Value]:
    """``build`` between two 1x1 Convs (seeded weights) of its input's and its output's
    channels, as a Conv sits in a network: onnxruntime runs a chain of Convs in its blocked
    channel layout and reorders the layout around other ops, such as a cover's Gather,
    Split and Concat. Timed alone, the dense Conv pays those reorders; in a network, not."""
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal((c, c, 1, 1)).astype(np.float32) / c
               for c in (channels_in, channels_out)]

    def wrapped(graph: ir.Graph, x: ir.Value) -> ir.Value:
        writer = Writer(graph, None, "context")
        y = writer.layer("Conv", x, weights[0], None, {}, None, "before")
        return writer.layer("Conv", build(graph, y), weights[1], None, {}, None, "after")
    return wrapped


def saved_in_context(dense: dict[Setting, float], dense_in_context: dict[Setting, float],
                      cover_in_context: dict[Setting, float]) -> dict[Setting, float]:
    """A cover's ms as the dense layer's less what it saved in context:
    t_dense - (t_dense,context - t_cover,context), at least 1% of t_dense."""
    return {s: max(ms - (dense_in_context[s] - cover_in_context[s]), 0.01 * ms)
            for s, ms in dense.items()}
