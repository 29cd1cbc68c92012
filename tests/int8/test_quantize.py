"""The int8 building blocks: the quantizer wrapper, the per-layer rule, the all-ones gate
pass and the exact-output check."""

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from relief_export.errors import ReliefError, VerificationError
from relief_export.int8 import LayerChoice, _check_quantized
from relief_export.int8.layers import choose_layers
from relief_export.onnx.compat import max_ir_version
from relief_export.onnx.passes import DropIdentityMul
from relief_export.onnx.quantize import layer_nodes, left_in_fp32, needs_reduce_range, quantize
from relief_export.onnx.verify import same_outputs
from relief_export.runtime.ort import session


def mlp() -> onnx.ModelProto:
    """input [batch, 16] -> Gemm (8) -> Relu -> Gemm (4)."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in (("w1", (8, 16)), ("b1", (8,)), ("w2", (4, 8)),
                                   ("b2", (4,)))]
    nodes = [helper.make_node("Gemm", ["input", "w1", "b1"], ["h"], "fc1", transB=1),
             helper.make_node("Relu", ["h"], ["r"], "relu"),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["output"], "fc2", transB=1)]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 4])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = max_ir_version()
    return model


def test_quantize_keeps_named_layers_in_fp32_and_reports_them():
    model = mlp()
    samples = np.random.default_rng(1).standard_normal((64, 16), dtype=np.float32)
    assert [n.name for n in layer_nodes(model)] == ["fc1", "fc2"]
    assert left_in_fp32(model) == ["fc1", "fc2"]
    everything = quantize(model, samples)
    assert left_in_fp32(everything) == []
    assert [n.name for n in layer_nodes(everything)] == ["fc1", "fc2"]
    partly = quantize(model, samples, "minmax", keep_fp32=["fc2"])
    assert left_in_fp32(partly) == ["fc2"]
    _check_quantized(partly, {"fc2"})
    with pytest.raises(ReliefError, match=r"leaves 1 node\(s\) with weights in fp32: fc2 \(Gemm\)"):
        _check_quantized(partly, set())
    with pytest.raises(ReliefError, match="unknown calibration method 'best'"):
        quantize(model, samples, "best")
    # int8 of a well-conditioned layer stays close to fp32 (per-channel int8 weights)
    x = samples[:8]
    exact = session(model.SerializeToString()).run(None, {"input": x})[0]
    approx = session(everything.SerializeToString()).run(None, {"input": x})[0]
    assert np.abs(approx - exact).max() < 0.05 * np.abs(exact).max()


def test_a_layer_stays_int8_when_it_beats_fp32_plus_the_transitions():
    """int8 < fp32 + qdq(in) + qdq(out)."""
    assert LayerChoice("a", "Conv", fp32_ms=1.0, int8_ms=1.2, transition_ms=0.3).int8
    assert not LayerChoice("a", "Conv", fp32_ms=1.0, int8_ms=1.4, transition_ms=0.3).int8
    assert not LayerChoice("a", "Conv", fp32_ms=1.0, int8_ms=1.3, transition_ms=0.3).int8


def test_choose_layers_times_every_layer():
    choices = choose_layers(mlp(), batch=16)
    assert [c.name for c in choices] == ["fc1", "fc2"]
    assert all(c.fp32_ms > 0 and c.int8_ms > 0 and c.transition_ms > 0 for c in choices)


def gated(factor: np.ndarray, output_is_product: bool = False) -> ir.Model:
    """input [batch, 4, 3, 3] * factor -> Relu (or the product itself as the output)."""
    shape = ["batch", 4, 3, 3]
    nodes = [helper.make_node("Mul", ["input", "gate"], ["product"], "gate")]
    if not output_is_product:
        nodes.append(helper.make_node("Relu", ["product"], ["output"], "relu"))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("product" if output_is_product else "output",
                                       TensorProto.FLOAT, shape)],
        [numpy_helper.from_array(factor.astype(np.float32), "gate")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = max_ir_version()
    return ir.from_proto(onnx.shape_inference.infer_shapes(model))


@pytest.mark.parametrize("factor, dropped", [
    (np.ones((1, 4, 1, 1)), True), (np.ones((4, 1, 1)), True), (np.ones(()), True),
    (np.array([1, 0, 1, 1]).reshape(1, 4, 1, 1), False),  # a real gate
    (np.ones((2, 4, 1, 1)), False),  # would broadcast the batch to 2
    (np.ones((1, 1, 4, 1, 1)), False),  # would add an axis
    (np.full((1, 4, 1, 1), 1.0 + 2 ** -20), False)])
def test_drop_identity_mul(factor, dropped):
    model = gated(factor)
    before = ir.to_proto(model).SerializeToString()
    assert DropIdentityMul()(model).modified is dropped
    assert [n.op_type for n in model.graph] == (["Relu"] if dropped else ["Mul", "Relu"])
    assert ("gate" in model.graph.initializers) is not dropped
    x = np.random.default_rng(0).standard_normal((2, 4, 3, 3), dtype=np.float32)
    x[0, 0, 0, :] = [-0.0, np.inf, np.nan]
    if not dropped:
        return
    expected = session(before).run(None, {"input": x})[0]
    got = session(ir.to_proto(model).SerializeToString()).run(None, {"input": x})[0]
    assert np.array_equal(got, expected, equal_nan=True)


def test_a_gate_that_is_the_graph_output_stays():
    model = gated(np.ones((1, 4, 1, 1)), output_is_product=True)
    assert not DropIdentityMul()(model).modified
    assert [n.op_type for n in model.graph] == ["Mul"]


def test_same_outputs_demands_bit_identical_results():
    model = mlp()
    changed = onnx.ModelProto()
    changed.CopyFrom(model)
    weight = numpy_helper.to_array(changed.graph.initializer[0]).copy()
    weight[0, 0] += 1e-3
    changed.graph.initializer[0].CopyFrom(numpy_helper.from_array(weight, "w1"))
    batches = {"batch": torch.randn(4, 16)}
    same_outputs(model.SerializeToString(), model.SerializeToString(), batches)
    with pytest.raises(VerificationError, match="the encoded weights change the model"):
        same_outputs(changed.SerializeToString(), model.SerializeToString(), batches)


@pytest.mark.parametrize(("machine", "flags", "needed"), [
    ("x86_64", "flags : fpu sse2 avx2 avx512f avx512bw", True),   # vpmaddubsw saturates
    ("x86_64", "flags : fpu avx2 avx512f avx512_vnni", False),
    ("AMD64", "flags : fpu avx2 avx_vnni", False),
    ("x86_64", "flags : fpu avx2 avx512_vnnix", True),             # whole flags only
    ("aarch64", "Features : fp asimd", False),
])
def test_reduce_range_is_needed_on_x86_without_vnni(machine, flags, needed):
    assert needs_reduce_range(machine, flags) is needed


def test_reduce_range_stores_7_bit_weights():
    """Symmetric per-channel weights: q = round(w / s), s = max|w| / 127 (8-bit) or max|w| / 64
    (7-bit: |q| <= 64 keeps a u8 x s8 pair sum below 2^15)."""
    model, samples = mlp(), np.random.default_rng(1).standard_normal((64, 16), dtype=np.float32)
    for reduce_range, limit in ((False, 127), (True, 64)):
        quantized = quantize(model, samples, reduce_range=reduce_range)
        weights = {t.name: numpy_helper.to_array(t) for t in quantized.graph.initializer
                   if t.data_type == TensorProto.INT8 and len(t.dims) == 2}
        assert len(weights) == 2
        for name, q in weights.items():
            assert np.abs(q).max(axis=1).tolist() == [limit] * q.shape[0], name
        fp32 = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "w1"))
        scale = np.abs(fp32).max(axis=1, keepdims=True) / limit
        assert np.array_equal(weights["w1_quantized"], np.round(fp32 / scale).astype(np.int8))
