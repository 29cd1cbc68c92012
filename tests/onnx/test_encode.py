import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from relief_export.onnx.encode import PREFIX, encode_weights
from relief_export.onnx.verify import session


def tiny_model(seed: int = 0) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
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
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    return model, {"w": conv, "g": gemm}


@pytest.mark.parametrize("mode", ["auto", "dense", "csr", "bsr", "bitmask"])
@pytest.mark.parametrize("fp16", [False, True])
def test_decoders_are_exact_and_folded_at_load(mode, fp16, tmp_path):
    model, _weights = tiny_model()
    x = np.random.default_rng(1).standard_normal((3, 4, 4, 4)).astype(np.float32)
    expected = session(model.SerializeToString()).run(None, {"input": x})[0]
    choices = encode_weights(model, mode=mode, fp16=fp16, min_elements=1)
    onnx.checker.check_model(model, full_check=True)
    formats = {c.name: c.format for c in choices}
    if mode == "bsr":
        assert formats["w"] == "bsr"
    if mode == "bitmask":
        assert set(formats.values()) == {"bitmask"}
    if mode == "dense" and not fp16:
        assert not any(n.name.startswith(PREFIX) for n in model.graph.node)
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    optimized = tmp_path / "optimized.onnx"
    options.optimized_model_filepath = str(optimized)
    got = ort.InferenceSession(model.SerializeToString(), options,
                               providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    if fp16:
        rounded, _ = tiny_model()
        for initializer in rounded.graph.initializer:
            array = numpy_helper.to_array(initializer).astype(np.float16).astype(np.float32)
            initializer.CopyFrom(numpy_helper.from_array(array, initializer.name))
        expected = session(rounded.SerializeToString()).run(None, {"input": x})[0]
    assert np.array_equal(got, expected) or np.abs(got - expected).max() <= 1e-6
    folded = onnx.load(optimized)
    survivors = [n.op_type for n in folded.graph.node if n.name.startswith(PREFIX)]
    assert survivors == []
    assert {n.op_type for n in folded.graph.node} & {"ScatterND", "CumSum", "BitShift",
                                                     "ScatterElements"} == set()


def test_encoding_shrinks_sparse_weights_and_reports_sizes():
    model, weights = tiny_model()
    before = len(model.SerializeToString())
    choices = encode_weights(model, min_elements=1)
    assert len(model.SerializeToString()) < before
    by_name = {c.name: c for c in choices}
    assert by_name["g"].nonzero == int(np.count_nonzero(weights["g"]))
    assert by_name["g"].dense_bytes == weights["g"].nbytes
    assert by_name["g"].stored_bytes < by_name["g"].dense_bytes


def test_bitmask_needs_opset_18():
    model, _ = tiny_model()
    model.opset_import[0].version = 17
    choices = encode_weights(model, mode="bitmask", min_elements=1)
    assert {c.format for c in choices} == {"dense"}
