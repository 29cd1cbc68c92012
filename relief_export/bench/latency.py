"""onnxruntime timing: sessions with fixed threads, warm-up, repeats interleaved across models.

Interleaving (A B A B ...) makes slow drifts of the machine (frequency, other load) hit every
model alike, so ratios measured in one run are trustworthy even when absolute times wander.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
import onnxruntime as ort

from ..errors import ReliefError, first_line
from ..runtime.ort import session


def create_session(model: bytes | str, threads: int) -> tuple[ort.InferenceSession, float]:
    """A CPU session with ``threads`` intra-op threads (1 inter-op) and its creation seconds."""
    start = time.perf_counter()
    try:
        created = session(model, threads)
    except Exception as error:  # onnxruntime raises its own exception types
        name = model if isinstance(model, str) else "the model"
        raise ReliefError(f"{name}: onnxruntime cannot load it ({first_line(error)})") from None
    return created, time.perf_counter() - start


def time_interleaved(sessions: Mapping[str, ort.InferenceSession], feed: np.ndarray,
                     warmup: int = 3, repeats: int = 20) -> dict[str, list[float]]:
    """Seconds per run for every model, measured round-robin ``repeats`` times each after
    ``warmup`` untimed rounds (at least one)."""
    names = list(sessions)
    inputs = {name: {sessions[name].get_inputs()[0].name: feed} for name in names}
    for _ in range(max(warmup, 1)):  # at least one untimed run: it shows the model runs
        for name in names:
            try:
                sessions[name].run(None, inputs[name])
            except Exception as error:  # onnxruntime's Fail, InvalidArgument, ...
                raise ReliefError(f"{name}: onnxruntime cannot run it on a batch of shape "
                                  f"{list(feed.shape)} ({first_line(error)})") from None
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeats):
        for name in names:
            start = time.perf_counter()
            sessions[name].run(None, inputs[name])
            times[name].append(time.perf_counter() - start)
    return times


def percentile(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples), q))
