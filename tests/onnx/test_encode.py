"""The EncodeWeights pass (onnx_ir): exact, folded by onnxruntime at load, smaller."""

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from relief_export.onnx.formats import MODES
from relief_export.onnx.formats.base import PREFIX
from relief_export.onnx.passes import CapIrVersion, EncodeWeights, SetMetadata
from relief_export.runtime.ort import session


def tiny_model(seed: int = 0, opset: int = 18) -> ir.Model:
    rng = np.random.default_rng(seed)
    conv = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    conv[rng.random((8, 4)) < 0.7] = 0
    conv[0] = 0  # an all-zero filter
    gemm = rng.standard_normal((5, 8 * 4 * 4)).astype(np.float32)
    gemm[rng.random(gemm.shape) < 0.9] = 0
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Flatten", ["c"], ["f"]),
             helper.make_node("Gemm", ["f", "g"], ["output"], transB=1)]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4, 4, 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 5])],
        [numpy_helper.from_array(conv, "w"), numpy_helper.from_array(gemm, "g")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return ir.from_proto(model)


def run(model: ir.Model, x: np.ndarray, optimized=None) -> np.ndarray:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    data = ir.to_proto(model).SerializeToString()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"]).run(
        None, {"input": x})[0]


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("fp16", [False, True])
def test_decoders_are_exact_and_folded_at_load(mode, fp16, tmp_path):
    model = tiny_model()
    x = np.random.default_rng(1).standard_normal((3, 4, 4, 4)).astype(np.float32)
    reference = tiny_model()
    if fp16:  # what a float16-weight file computes: the weights rounded to float16
        for value in reference.graph.initializers.values():
            rounded = value.const_value.numpy().astype(np.float16).astype(np.float32)
            value.const_value = ir.tensor(rounded, name=value.name)
    expected = run(reference, x)
    encode = EncodeWeights(MODES[mode], np.float16 if fp16 else np.float32, min_elements=1)
    result = encode(model)
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    formats = {c.name: c.format for c in encode.choices}
    assert result.modified == (mode != "dense" or fp16)
    if mode == "bsr":
        assert formats["w"] in ("bsr", "bsr_delta")
    if mode == "bitmask":
        assert set(formats.values()) == {"bitmask"}
    optimized = tmp_path / "optimized.onnx"
    got = run(model, x, optimized)
    assert np.abs(got - expected).max() <= 1e-6 * max(1.0, np.abs(expected).max())
    folded = onnx.load(optimized)
    assert [n.op_type for n in folded.graph.node if n.name.startswith(PREFIX)] == []
    assert {n.op_type for n in folded.graph.node} & {"ScatterND", "CumSum", "BitShift",
                                                     "ScatterElements", "Gather"} == set()


def test_encoding_shrinks_sparse_weights_and_reports_sizes():
    model = tiny_model()
    weights = {name: value.const_value.numpy() for name, value in
               model.graph.initializers.items()}
    before = len(ir.to_proto(model).SerializeToString())
    encode = EncodeWeights(MODES["auto"], min_elements=1)
    encode(model)
    assert len(ir.to_proto(model).SerializeToString()) < before
    by_name = {c.name: c for c in encode.choices}
    assert by_name["g"].nonzero == int(np.count_nonzero(weights["g"]))
    assert by_name["g"].dense_bytes == weights["g"].nbytes
    assert by_name["g"].stored_bytes < by_name["g"].dense_bytes


def test_bitmask_needs_opset_18():
    encode = EncodeWeights(MODES["bitmask"], min_elements=1)
    encode(tiny_model(opset=17))
    assert {c.format for c in encode.choices} == {"dense"}


def test_metadata_and_ir_version_passes():
    model = tiny_model()
    model.ir_version = 99
    result = ir.passes.PassManager([CapIrVersion(9), SetMetadata(
        lambda m: {"initializers": str(len(m.graph.initializers))})])(model)
    assert result.modified and model.ir_version == 9
    assert model.metadata_props["initializers"] == "2"
    assert not CapIrVersion(9)(model).modified
    x = np.zeros((1, 4, 4, 4), np.float32)
    assert session(ir.to_proto(model).SerializeToString()).run(None, {"input": x})[0].shape == \
        (1, 5)
