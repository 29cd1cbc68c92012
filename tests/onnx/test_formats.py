import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from relief_export.compile.formats import FORMATS, decode, encode, smallest


def test_delta_golden():
    tensor = np.zeros((2, 300), np.float32)
    tensor[0, 2], tensor[1, 299] = 1.5, -2.0  # flat positions 2 and 599
    encoded = encode(tensor, "delta")
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


def test_bsr_keeps_whole_kernel_slices():
    tensor = np.zeros((2, 3, 2, 2), np.float32)
    tensor[0, 1] = [[1, 0], [0, 2]]
    tensor[1, 2, 0, 0] = 3
    encoded = encode(tensor, "bsr")
    assert encoded.arrays["gaps"].tolist() == [2, 4]  # grid cells 1 and 5
    assert encoded.arrays["blocks"].tolist() == [[1, 0, 0, 2], [3, 0, 0, 0]]
    assert encode(tensor.reshape(6, 4), "bsr") is None  # only for 4-D conv weights


def test_bitmask_golden():
    tensor = np.array([0, 1, 0, 0, 0, 0, 0, 2, 3], np.float32)
    encoded = encode(tensor, "bitmask")
    assert encoded.arrays["bits"].tolist() == [0b01000001, 0b10000000]
    assert encoded.arrays["values"].tolist() == [1, 2, 3]


def test_smallest_picks_by_bytes():
    dense = np.ones((4, 4), np.float32)
    assert smallest(dense).format == "dense"
    sparse = np.zeros((64, 64), np.float32)
    sparse[3, 7] = 1
    choice = smallest(sparse)
    assert choice.format == "delta" and choice.nbytes == 5


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(1, 5), st.integers(1, 3),
                                    st.integers(1, 3)),
              elements=st.sampled_from([0.0, 0.0, 0.0, 1.0, -2.5, 3e-8])),
       st.sampled_from([np.float32, np.float16]))
def test_every_format_round_trips(tensor, value_dtype):
    for name in FORMATS:
        encoded = encode(tensor, name, value_dtype)
        if encoded is None:
            continue
        expected = tensor.astype(value_dtype).astype(np.float32)
        assert np.array_equal(decode(encoded), expected), name


@pytest.mark.parametrize("size", [256, 1000, 70000])
def test_long_gaps_use_escapes(size):
    tensor = np.zeros(size, np.float32)
    tensor[-1] = 4.0
    encoded = encode(tensor, "delta")
    assert len(encoded.arrays["gaps"]) == -(-size // 255)
    assert np.array_equal(decode(encoded), tensor)
