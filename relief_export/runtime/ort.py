"""onnxruntime sessions, made one way for verification and benchmarks alike."""

from __future__ import annotations

import onnxruntime as ort


def session(model: bytes | str, threads: int = 0, optimize: bool = True
            ) -> ort.InferenceSession:
    """A quiet CPU session, run sequentially; ``threads`` intra-op threads (0: onnxruntime's
    default) and one inter-op thread. ``optimize=False`` runs the graph as written (the ONNX
    semantics: onnxruntime's graph rewrites are not all exact, e.g. a zero Pad fused into
    the MaxPool after it pads with -inf instead)."""
    options = ort.SessionOptions()
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
