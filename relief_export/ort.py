"""onnxruntime sessions, made one way for verification and benchmarks alike."""

from __future__ import annotations

import onnxruntime as ort


def session(model: bytes | str, threads: int = 0) -> ort.InferenceSession:
    """A quiet CPU session, run sequentially; ``threads`` intra-op threads (0: onnxruntime's
    default) and one inter-op thread."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
