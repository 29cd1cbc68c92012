"""int8 by onnxruntime.quantization (we do not write a quantizer): static QDQ, per-channel
symmetric int8 weights, uint8 activations (on this CPU family s8 activations ran 1.6x slower
and dynamic quantization 5-7x slower than fp32), activation ranges calibrated on real
samples by one of ``CALIBRATION_METHODS``.

``reduce_range`` stores weights in 7 bits (|q| <= 64): x86 CPUs without VNNI multiply
u8 x s8 pairs into an int16 sum that saturates (255 * 127 * 2 > 32767 >= 255 * 64 * 2), so full
8-bit weights lose accuracy there; ``needs_reduce_range`` says whether this CPU is one.

A layer (Conv / Gemm / MatMul with a constant weight) is quantized unless named in
``keep_fp32``; ``left_in_fp32`` reads back which nodes still compute with float weights."""

from __future__ import annotations

import platform
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

from ..errors import ReliefError, first_line
from ..quiet import quiet_libraries
from .passes.encode_weights import LAYER_WEIGHT_INPUTS

CALIBRATION_METHODS = {"minmax": CalibrationMethod.MinMax,
                       "percentile": CalibrationMethod.Percentile,
                       "entropy": CalibrationMethod.Entropy}
CALIBRATION_BATCH = 32
X86 = ("x86_64", "amd64", "i386", "i686")
VNNI_FLAGS = ("avx512_vnni", "avx_vnni")


class _Batches(CalibrationDataReader):
    def __init__(self, name: str, samples: np.ndarray):
        self.items = iter([{name: samples[i:i + CALIBRATION_BATCH]}
                           for i in range(0, len(samples), CALIBRATION_BATCH)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.items, None)


def needs_reduce_range(machine: str | None = None, cpuinfo: str | None = None) -> bool:
    """True on x86 without VNNI (or where /proc/cpuinfo cannot say): its u8 x s8 int8
    kernels saturate full-range weights."""
    machine = (machine or platform.machine()).lower()
    if machine not in X86:
        return False
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return True
    flags = set(cpuinfo.split())
    return not any(flag in flags for flag in VNNI_FLAGS)


def resolve_reduce_range(mode: str) -> bool:
    """``mode`` (catalog.REDUCE_RANGE_MODES): ``auto`` gives 7-bit weights where this CPU
    needs them; ``on`` / ``off`` force it."""
    return needs_reduce_range() if mode == "auto" else mode == "on"


def quantize(model: onnx.ModelProto, samples: np.ndarray, method: str = "minmax",
             keep_fp32: Iterable[str] = (), reduce_range: bool = False) -> onnx.ModelProto:
    """The QDQ int8 model; ``samples`` (float32, the model's input shape) calibrate the
    activation ranges; ``reduce_range``: 7-bit weights."""
    if method not in CALIBRATION_METHODS:
        raise ReliefError(f"unknown calibration method {method!r}; use one of "
                          f"{', '.join(CALIBRATION_METHODS)}")
    name = model.graph.input[0].name
    with tempfile.TemporaryDirectory(prefix="relief_int8_") as folder:
        source, target = Path(folder) / "fp32.onnx", Path(folder) / "int8.onnx"
        onnx.save(model, source)
        try:
            with quiet_libraries(stdout=True):
                quantize_static(str(source), str(target), _Batches(name, samples),
                                quant_format=QuantFormat.QDQ, per_channel=True,
                                activation_type=QuantType.QUInt8,
                                weight_type=QuantType.QInt8, reduce_range=reduce_range,
                                calibrate_method=CALIBRATION_METHODS[method],
                                nodes_to_exclude=sorted(keep_fp32),
                                extra_options={"WeightSymmetric": True},
                                calibration_providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime.quantization raises many kinds
            raise ReliefError(f"onnxruntime.quantization cannot quantize the model "
                              f"({first_line(error)})") from None
        return onnx.load(target)


def layer_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The layers: Conv / Gemm / MatMul nodes whose weight is an initializer, or (once
    quantized) the DequantizeLinear of one."""
    constants = {t.name for t in model.graph.initializer}
    constants |= {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"
                  and n.input[0] in constants}
    return [n for n in model.graph.node if (index := LAYER_WEIGHT_INPUTS.get(n.op_type)) is not None
            and len(n.input) > index and n.input[index] in constants]


def left_in_fp32(model: onnx.ModelProto) -> list[str]:
    """Nodes (other than DequantizeLinear) that read a float initializer of rank >= 2 (a
    weight) directly rather than through DequantizeLinear."""
    weights = {t.name for t in model.graph.initializer
               if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) >= 2}
    return [n.name for n in model.graph.node if n.op_type != "DequantizeLinear"
            and any(name in weights for name in n.input)]
