"""The int8 stage of the export: its options, the quantization of the compacted fp32 graph
and what it records (see ``relief_export.int8``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import torch

from .. import validate
from ..catalog import REDUCE_RANGE_MODES
from ..errors import ReliefError
from ..inputs import LoadedModel
from ..int8 import LAYER_MODES, METHODS, int8_samples, to_int8
from ..onnx.quantize import resolve_reduce_range
from .report import ExportReport, calibration_text


@dataclass(frozen=True)
class Int8Options:
    """export_onnx's int8 arguments (see ``relief_export.int8``)."""

    calib_data: str | None
    calib_samples: int
    calib_method: str
    calib_synthetic: bool
    layers: str
    batch: int
    accept_drop: float
    reduce_range: str = "auto"

    def check(self, int8: bool, fp16: bool) -> None:
        validate.flag("calib_synthetic", self.calib_synthetic)
        validate.choice("calib_method", self.calib_method, METHODS)
        validate.choice("int8_layers", self.layers, LAYER_MODES)
        validate.choice("int8_reduce_range", self.reduce_range, REDUCE_RANGE_MODES)
        validate.integer("calib_samples", self.calib_samples, 1, 100_000)
        validate.integer("int8_batch", self.batch, 1, 4096)
        validate.number("accept_accuracy_drop", self.accept_drop, 0, 100)
        if int8 and fp16:
            raise ReliefError("--int8 and --fp16-weights exclude each other: int8 stores "
                              "weights as int8 already")
        if not int8 and (self.calib_data is not None or self.calib_synthetic
                         or self.accept_drop):
            raise ReliefError("the calibration options apply to int8 export only; add --int8")


def check_int8_inputs(examples: tuple[torch.Tensor, ...], source: Path) -> None:
    if len(examples) != 1 or not examples[0].is_floating_point():
        raise ReliefError(f"{source}: --int8 calibrates models with one float input; this "
                          f"one takes {len(examples)} input(s) "
                          f"({', '.join(str(x.dtype) for x in examples)})")


def quantize_stage(report: ExportReport, fp32: onnx.ModelProto, loaded: LoadedModel,
                   shape: list[int], options: Int8Options,
                   progress: Callable[[str], None] | None) -> onnx.ModelProto:
    """The int8 stage: samples, to_int8, and what it chose in the report."""
    samples = int8_samples(options.calib_data or loaded.data, shape, options.calib_samples,
                           options.calib_synthetic)
    quantized, int8_report = to_int8(fp32, samples, method=options.calib_method,
                                     layers=options.layers, batch=options.batch,
                                     accept_drop=options.accept_drop,
                                     reduce_range=resolve_reduce_range(options.reduce_range),
                                     progress=progress)
    report.int8 = int8_report.to_dict()
    if int8_report.chosen == "fp32":
        times = int8_report.whole_model_ms
        report.notes.append(
            f"--int8: fp32 measured fastest here ({times['fp32']:.2f} ms against "
            f"{min(times['int8 per layer'], times['int8 everywhere']):.2f} ms in int8 at "
            f"batch {options.batch}); the file is fp32 (--int8-layers all forces int8)")
    return quantized


def int8_metadata(int8: dict[str, Any]) -> dict[str, Any]:
    """What inspect shows of an int8 file: how each layer runs and how that was decided (the
    timings stay in the --report JSON)."""
    int8_layers = [c["name"] for c in int8["layers"] if c["int8"]]
    return {"calibration": calibration_text(int8), "reduce_range": int8["reduce_range"],
            "chosen": int8["chosen"], "fp32_layers": int8["fp32_layers"],
            "measured_int8": int8_layers if int8["layers"] else None}
