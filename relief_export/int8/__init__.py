"""int8 on top of compaction: choose layers by measurement, calibrate with the method that
agrees best with fp32 on held-out samples, quantize with onnxruntime.quantization, and gate
the result on top-1 agreement with fp32 (``to_int8``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import onnx

from ..bench.latency import time_interleaved
from ..errors import ReliefError, VerificationError
from ..onnx.quantize import CALIBRATION_METHODS, left_in_fp32, quantize
from ..runtime.ort import session
from .accuracy import Agreement, agreement, predictions
from .layers import LayerChoice, choose_layers
from .samples import Samples, int8_samples

__all__ = ["LAYER_MODES", "METHODS", "Int8Report", "Samples", "int8_samples", "to_int8"]

METHODS = ("auto", *CALIBRATION_METHODS)
LAYER_MODES = ("auto", "all")
REQUIRED_AGREEMENT = 0.99
WHOLE_MODEL_REPEATS = 5


@dataclass
class Int8Report:
    """What int8 export chose and measured (milliseconds at ``batch``, 1 thread)."""

    calibration: str
    method: str = ""
    method_agreement: dict[str, float] = field(default_factory=dict)
    layers: list[LayerChoice] = field(default_factory=list)
    fp32_layers: list[str] = field(default_factory=list)
    batch: int = 0
    whole_model_ms: dict[str, float] = field(default_factory=dict)
    chosen: str = ""
    check: Agreement | None = None
    required_agreement: float = REQUIRED_AGREEMENT
    reduce_range: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "layers": [{**asdict(c), "int8": c.int8} for c in self.layers]}


Progress = Callable[[str], None]


def to_int8(fp32: onnx.ModelProto, samples: Samples, *, method: str = "auto",
            layers: str = "auto", batch: int = 64, accept_drop: float = 0.0,
            reduce_range: bool = False, progress: Progress | None = None
            ) -> tuple[onnx.ModelProto, Int8Report]:
    """The fastest of (int8 where each layer measured faster, int8 everywhere, fp32) with the
    calibration method of best agreement; raises VerificationError (exit 1) when top-1
    agreement with fp32 on the evaluation samples is below 99% - ``accept_drop`` points.
    ``reduce_range``: 7-bit weights (see ``onnx.quantize``)."""
    say = progress or (lambda _: None)
    report = Int8Report(samples.source, batch=batch,
                        required_agreement=REQUIRED_AGREEMENT - accept_drop / 100,
                        reduce_range=reduce_range)
    if layers == "auto":
        report.layers = choose_layers(fp32, batch, progress=say)
    keep = {c.name for c in report.layers if not c.int8}
    fp32_bytes = fp32.SerializeToString()
    reference = predictions(fp32_bytes, samples.selection)
    candidates = {}
    for name in CALIBRATION_METHODS if method == "auto" else (method,):
        say(f"calibrating int8 ranges ({name}) on {samples.source}")
        candidates[name] = quantize(fp32, samples.calibration, name, keep, reduce_range)
        chosen = predictions(candidates[name].SerializeToString(), samples.selection)
        report.method_agreement[name] = float(np.mean(chosen == reference))
    report.method = max(report.method_agreement, key=report.method_agreement.__getitem__)
    model = candidates[report.method]
    _check_quantized(model, keep)
    if layers == "auto":
        model = _fastest(report, fp32, model, samples, keep, say)
    else:
        report.chosen = "int8 everywhere"
    report.fp32_layers = left_in_fp32(model)
    report.check = agreement(fp32_bytes, model.SerializeToString(), samples.evaluation,
                             samples.labels)
    if report.check.agreement < report.required_agreement:
        raise VerificationError(
            f"int8 top-1 agreement with fp32 is {100 * report.check.agreement:.2f}% on "
            f"{report.check.samples} evaluation samples, below the "
            f"{100 * report.required_agreement:.2f}% required; no file written (pass "
            "--accept-accuracy-drop PTS to allow PTS points less, or calibrate on more "
            "samples with --calib-samples)")
    return model, report


def _check_quantized(model: onnx.ModelProto, keep: set[str]) -> None:
    """Every layer not kept in fp32 on purpose must have been quantized."""
    missed = [name for name in left_in_fp32(model) if name not in keep]
    if missed:
        kinds = {n.name: n.op_type for n in model.graph.node}
        named = ", ".join(f"{name} ({kinds.get(name, '?')})" for name in missed[:5])
        raise ReliefError(f"onnxruntime.quantization leaves {len(missed)} node(s) with "
                          f"weights in fp32: {named}; export without --int8")


def _fastest(report: Int8Report, fp32: onnx.ModelProto, chosen: onnx.ModelProto,
             samples: Samples, keep: set[str], say: Progress) -> onnx.ModelProto:
    """Time the whole model three ways, interleaved, and keep the fastest."""
    models = {"int8 per layer": chosen,
              "int8 everywhere": quantize(fp32, samples.calibration, report.method,
                                          reduce_range=report.reduce_range)
              if keep else chosen, "fp32": fp32}
    say(f"timing the whole model at batch {report.batch}: " + ", ".join(models))
    shape = (report.batch, *samples.calibration.shape[1:])
    feed = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    runners = {name: session(model.SerializeToString(), 1) for name, model in models.items()}
    times = time_interleaved(runners, feed, warmup=2, repeats=WHOLE_MODEL_REPEATS)
    report.whole_model_ms = {name: 1e3 * float(np.median(t)) for name, t in times.items()}
    report.chosen = min(report.whole_model_ms, key=report.whole_model_ms.__getitem__)
    return models[report.chosen]
