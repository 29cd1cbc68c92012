"""The weight-format registry: golden encodings by hand, and for every format, value dtype
(float32, float16, int8) and shape family (1-D, 2-D, 4-D; empty rows, all zero, all dense):
encode -> the ONNX decoder in onnxruntime == the numpy decode == the input."""

import numpy as np
import onnx_ir as ir
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from onnx.reference import ReferenceEvaluator

from relief_export.onnx.formats import FORMATS, MODES, Decoder, decode, smallest
from relief_export.runtime.ort import session


def encode(tensor, name):
    return FORMATS[name].encode(tensor)


def test_csr_delta_golden():
    tensor = np.zeros((2, 300), np.float32)
    tensor[0, 2], tensor[1, 299] = 1.5, -2.0  # flat positions 2 and 599
    encoded = encode(tensor, "csr_delta")
    # first gap = 2 + 1; then 597 = 255 + 255 + 87: two escape entries carrying 0
    assert encoded.arrays["gaps"].tolist() == [3, 255, 255, 87]
    assert encoded.arrays["values"].tolist() == [1.5, 0.0, 0.0, -2.0]
    assert np.array_equal(decode(encoded), tensor)


def test_csr_golden():
    tensor = np.array([[0, 2, 0], [0, 0, 0], [5, 0, 7]], np.float32)
    encoded = encode(tensor, "csr")
    assert encoded.arrays["values"].tolist() == [2, 5, 7]
    assert encoded.arrays["columns"].tolist() == [1, 0, 2]
    assert encoded.arrays["columns"].dtype == np.uint8
    assert encoded.arrays["row_pointers"].tolist() == [0, 1, 1, 3]
    assert encoded.nbytes == 3 * 4 + 3 + 4


def test_block_formats_keep_whole_kernel_slices():
    tensor = np.zeros((2, 3, 2, 2), np.float32)
    tensor[0, 1] = [[1, 0], [0, 2]]
    tensor[1, 2, 0, 0] = 3
    gapped = encode(tensor, "bsr_delta")
    assert gapped.arrays["gaps"].tolist() == [2, 4]  # grid cells 1 and 5
    assert gapped.arrays["values"].tolist() == [[1, 0, 0, 2], [3, 0, 0, 0]]
    blocked = encode(tensor, "bsr")  # scipy block CSR, one kernel slice per block
    assert blocked.arrays["values"].tolist() == [[1, 0, 0, 2], [3, 0, 0, 0]]
    assert blocked.arrays["columns"].tolist() == [1, 2]
    assert blocked.arrays["row_pointers"].tolist() == [0, 1, 2]
    assert encode(tensor.reshape(6, 4), "bsr") is None  # only for 4-D conv weights
    assert encode(tensor.reshape(6, 4), "bsr_delta") is None


def test_bitmask_golden():
    tensor = np.array([0, 1, 0, 0, 0, 0, 0, 2, 3], np.float32)
    encoded = encode(tensor, "bitmask")
    assert encoded.arrays["bits"].tolist() == [0b01000001, 0b10000000]
    assert encoded.arrays["values"].tolist() == [1, 2, 3]


def test_smallest_picks_by_bytes():
    assert smallest(np.ones((4, 4), np.float32)).format == "dense"
    sparse = np.zeros((64, 64), np.float32)
    sparse[3, 7] = 1
    choice = smallest(sparse)
    assert choice.format == "csr_delta" and choice.nbytes == 5
    assert smallest(sparse, MODES["csr"]).format == "csr_delta"
    assert set(MODES["auto"]) == set(FORMATS)


@pytest.mark.parametrize("size", [256, 1000, 70000])
def test_long_gaps_use_escapes(size):
    tensor = np.zeros(size, np.float32)
    tensor[-1] = 4.0
    encoded = encode(tensor, "csr_delta")
    assert len(encoded.arrays["gaps"]) == -(-size // 255)
    assert np.array_equal(decode(encoded), tensor)


def onnx_decode(encoded, dtype):
    """Run the format's decoder subgraph alone in onnxruntime and in onnx.reference (the
    spec's own implementation); both must agree."""
    decoder = Decoder("w", ir.DataType.from_numpy(np.dtype(dtype)))
    output = FORMATS[encoded.format].emit(decoder, encoded)
    if output.producer() is None:
        output = decoder.op("Identity", [output])
    output.name = "out"
    graph = ir.Graph(inputs=[], outputs=[output], nodes=decoder.nodes,
                     initializers=decoder.initializers, opset_imports={"": 18})
    proto = ir.to_proto(ir.Model(graph, ir_version=10))
    got = session(proto.SerializeToString()).run(None, {})[0]
    assert np.array_equal(ReferenceEvaluator(proto).run(None, {})[0], got)
    return got


def family(shape, dtype, kind, seed=0):
    rng = np.random.default_rng(seed)
    values = (rng.standard_normal(shape) * 20).astype(dtype)
    if kind == "all zero":
        return np.zeros(shape, dtype)
    if kind == "all dense":
        return np.where(values == 0, np.ones_like(values), values)
    values = np.where(rng.random(shape) < 0.15, values, np.zeros_like(values))
    if kind == "empty rows":
        values[: shape[0] // 2] = 0
    return values


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int8])
@pytest.mark.parametrize("shape", [(70,), (12, 30), (6, 4, 3, 3), (5, 3, 1, 1)])
@pytest.mark.parametrize("kind", ["sparse", "empty rows", "all zero", "all dense"])
@pytest.mark.parametrize("name", list(FORMATS))
def test_onnx_decoder_equals_numpy_decode_equals_input(name, shape, kind, dtype):
    tensor = family(shape, dtype, kind)
    encoded = encode(tensor, name)
    if encoded is None:
        assert name.startswith("bsr") and (len(shape) != 4 or (shape[2] * shape[3] < 2
                                           and name == "bsr"))
        return
    assert encoded.dtype == np.dtype(dtype)
    in_numpy = decode(encoded)
    assert in_numpy.dtype == np.dtype(dtype) and np.array_equal(in_numpy, tensor)
    in_onnx = onnx_decode(encoded, dtype)
    assert in_onnx.dtype == np.dtype(dtype) and np.array_equal(in_onnx, in_numpy)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(1, 5), st.integers(1, 3),
                                    st.integers(1, 3)),
              elements=st.sampled_from([0.0, 0.0, 0.0, 1.0, -2.5, 3e-8])),
       st.sampled_from([np.float32, np.float16]))
def test_every_format_round_trips_in_numpy(tensor, value_dtype):
    values = tensor.astype(value_dtype)
    for name, fmt in FORMATS.items():
        encoded = fmt.encode(values)
        if encoded is not None:
            assert np.array_equal(decode(encoded), values), name
