"""The newest ONNX IR version the installed onnxruntime loads (onnx may write newer ones)."""

from __future__ import annotations

import functools

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper


@functools.cache
def max_ir_version() -> int:
    """Probe onnxruntime with a one-node model at decreasing IR versions."""
    for version in range(onnx.IR_VERSION, 6, -1):
        graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = version
        try:
            session = ort.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
            session.run(None, {"x": np.zeros(1, np.float32)})
            return version
        except Exception:  # onnxruntime rejects IR versions it does not know
            continue
    return 7
