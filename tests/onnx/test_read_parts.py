"""Slices and Gathers of a channel Concat read its parts directly: the same outputs, fewer
copies."""

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from relief_export.onnx.passes.read_parts import MAX_SHARES, ReadPartsDirectly
from relief_export.runtime.ort import session


def _int64(name: str, values: list[int]) -> onnx.TensorProto:
    return helper.make_tensor(name, TensorProto.INT64, [len(values)], values)


def concat_model(readers: dict[str, tuple[str, list[int]]]) -> onnx.ModelProto:
    """a (N, 3, 4, 4) and b (N, 5, 4, 4), each times 2, concatenated (8 channels), max
    pooled, then each reader ("slice", [start, end]) or ("gather", indices), negated into
    the output of its name."""
    nodes = [helper.make_node("Mul", ["a", "two"], ["pa"]),
             helper.make_node("Mul", ["b", "two"], ["pb"]),
             helper.make_node("Concat", ["pa", "pb"], ["joined"], axis=1),
             helper.make_node("MaxPool", ["joined"], ["pooled"], kernel_shape=[2, 2],
                              strides=[2, 2])]
    inits = [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]), _int64("axis", [1])]
    for name, (kind, values) in readers.items():
        if kind == "slice":
            inits += [_int64(f"{name}_s", values[:1]), _int64(f"{name}_e", values[1:])]
            nodes.append(helper.make_node("Slice", ["pooled", f"{name}_s", f"{name}_e", "axis"],
                                          [f"{name}_read"]))
        else:
            inits.append(_int64(f"{name}_i", values))
            nodes.append(helper.make_node("Gather", ["pooled", f"{name}_i"], [f"{name}_read"],
                                          axis=1))
        nodes.append(helper.make_node("Neg", [f"{name}_read"], [name]))
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", c, 4, 4])
              for n, c in (("a", 3), ("b", 5))]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in readers]
    graph = helper.make_graph(nodes, "parts", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def run(proto: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    runtime = session(proto.SerializeToString()).run(None, feed)
    reference = ReferenceEvaluator(proto).run(None, feed)
    for got, expected in zip(runtime, reference, strict=True):
        np.testing.assert_array_equal(got, expected)
    return runtime


def rewritten(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, bool]:
    model = ir.serde.deserialize_model(proto)
    result = ReadPartsDirectly()(model)
    return ir.to_proto(model), result.modified


def test_slices_and_gathers_read_the_parts():
    """Channels 0-2 are a's, 3-7 b's: [0, 3) is a itself, [3, 8) b itself, [1, 6) a's 1-2
    and b's 0-2, Gather [4, 5, 0, 1] b's 1-2 then a's 0-1; the pooling moves onto each
    part, and the Concat of all eight channels is gone."""
    readers = {"whole_a": ("slice", [0, 3]), "whole_b": ("slice", [3, 8]),
               "across": ("slice", [1, 6]), "picked": ("gather", [4, 5, 0, 1])}
    proto = concat_model(readers)
    rng = np.random.default_rng(0)
    feed = {"a": rng.standard_normal((2, 3, 4, 4), dtype=np.float32),
            "b": rng.standard_normal((2, 5, 4, 4), dtype=np.float32)}
    before = run(proto, feed)
    after_proto, modified = rewritten(proto)
    assert modified
    for got, expected in zip(run(after_proto, feed), before, strict=True):
        np.testing.assert_array_equal(got, expected)
    ops = [n.op_type for n in after_proto.graph.node]
    assert ops.count("MaxPool") == 2 and "Gather" not in ops
    assert ops.count("Concat") == 2  # across and picked: two shares each
    concat_inputs = [len(n.input) for n in after_proto.graph.node if n.op_type == "Concat"]
    assert concat_inputs == [2, 2]
    slices = [n for n in after_proto.graph.node if n.op_type == "Slice"]
    assert len(slices) == 4  # a[1:3], b[0:3], b[1:3], a[0:2]; whole parts need none


def test_a_gather_of_many_pieces_and_a_strided_slice_stay():
    scattered = list(range(0, 8, 2)) * 5  # 20 single-channel runs > MAX_SHARES
    assert len(scattered) > MAX_SHARES
    proto = concat_model({"scattered": ("gather", scattered)})
    _, modified = rewritten(proto)
    assert not modified
    stepped = concat_model({"s": ("slice", [0, 8])})
    step = _int64("step", [2])
    stepped.graph.initializer.append(step)
    slice_node = stepped.graph.node[-2]
    slice_node.input.append("step")
    after, modified = rewritten(stepped)
    assert not modified and [n.op_type for n in after.graph.node].count("Concat") == 1
