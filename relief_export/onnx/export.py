"""``export_onnx``: load -> compact -> ONNX -> encode weights -> verify -> write atomically."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from .. import __version__
from ..checkpoint import LoadedModel, read_model
from ..compile import compact_with_report
from ..compile.graph import unmasked_copy
from ..errors import ReliefError, first_line
from ..files import atomic_write, check_writable
from ..table import format_table
from . import verify
from .emit import set_metadata, to_onnx
from .encode import MODES, TensorChoice, encode_weights

FP32_TOLERANCE = 1e-4
MIN_OPSET = 17


@dataclass
class ExportReport:
    """What ``export_onnx`` produced and measured."""

    source: str
    out: str
    weights: str
    fp16_weights: bool
    params_dense: int = 0
    params_nonzero: int = 0
    params_compact: int = 0
    file_bytes: int = 0
    dense_file_bytes: int | None = None
    verification: list[dict[str, Any]] = field(default_factory=list)
    fp16_error_vs_fp32: float | None = None
    seconds: float = 0.0
    tensors: list[TensorChoice] = field(default_factory=list)
    compaction: dict[str, Any] = field(default_factory=dict)

    @property
    def bytes_per_nonzero(self) -> float:
        return self.file_bytes / max(self.params_nonzero, 1)

    @property
    def max_relative_error(self) -> float | None:
        return max((c["relative"] for c in self.verification), default=None)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "bytes_per_nonzero": self.bytes_per_nonzero,
                "max_relative_error": self.max_relative_error}

    def summary(self) -> str:
        dense = f"{self.dense_file_bytes:,}" if self.dense_file_bytes else "(use --dense-out)"
        error = "skipped (--no-verify)" if self.max_relative_error is None \
            else f"{self.max_relative_error:.2e}"
        rows = [["parameters (dense)", f"{self.params_dense:,}"],
                ["nonzero parameters", f"{self.params_nonzero:,}"],
                ["parameters after compaction", f"{self.params_compact:,}"],
                ["file bytes: dense ONNX", dense],
                ["file bytes: this model", f"{self.file_bytes:,}"],
                ["bytes per nonzero weight", f"{self.bytes_per_nonzero:.2f}"],
                ["verification: max relative error", error],
                ["seconds", f"{self.seconds:.1f}"]]
        if self.fp16_error_vs_fp32 is not None:
            rows.insert(-1, ["fp16 weights: relative error vs fp32",
                             f"{self.fp16_error_vs_fp32:.2e}"])
        formats = ", ".join(f"{f} x{n}" for f, n in self._format_counts().items())
        return format_table(["", self.out], rows) + f"\nweight formats: {formats}"

    def _format_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for tensor in self.tensors:
            counts[tensor.format] = counts.get(tensor.format, 0) + 1
        return counts


def export_onnx(model_or_path: nn.Module | str | Path, out_path: str | Path, *,
                example_inputs: torch.Tensor | None = None,
                input_shape: list[int] | None = None, weights: str = "auto",
                fp16_weights: bool = False, opset: int = 18, align: int = 8,
                dense_out: str | Path | None = None, verify_outputs: bool = True,
                trust: bool = False, allow_factory: bool = False,
                report_path: str | Path | None = None) -> ExportReport:
    """Export a masked model (module, checkpoint, .pt2 or trusted pickle) to a compact ONNX file.

    ``align``: layers keep a multiple of this many units (onnxruntime's CPU kernels work on
    channel blocks of 8); 1 keeps the minimum. Output files are written only once complete
    and verified; the input is never modified.
    """
    start = time.perf_counter()
    if weights not in MODES:
        raise ReliefError(f"--weights must be one of {', '.join(MODES)}, got {weights!r}")
    if opset < MIN_OPSET:
        raise ReliefError(f"--opset must be >= {MIN_OPSET}, got {opset}")
    if align < 1:
        raise ReliefError(f"--align must be >= 1, got {align}")
    outputs = _check_outputs(model_or_path, out_path, dense_out, report_path)
    loaded = _load(model_or_path, trust, allow_factory)
    example = _example(loaded, example_inputs, input_shape)
    report = ExportReport(str(loaded.source), str(out_path), weights, fp16_weights)
    compacted, compaction = compact_with_report(loaded.model, example, fold_batchnorm=True,
                                                align=align)
    proto = to_onnx(compacted, example, opset)
    report.tensors = encode_weights(proto, mode=weights, fp16=fp16_weights)
    _count(report, loaded.model, compacted, compaction.to_dict())
    set_metadata(proto, _metadata(report))
    data = proto.SerializeToString()
    if verify_outputs:
        _verify(report, proto, data, loaded, compacted, example)
    dense_data = _dense_bytes(loaded.model, example, opset) if dense_out else None
    report.file_bytes = len(data)
    report.dense_file_bytes = len(dense_data) if dense_data is not None else None
    report.seconds = time.perf_counter() - start
    atomic_write(outputs["out"], lambda temp: temp.write_bytes(data))
    if dense_data is not None:
        atomic_write(outputs["dense"], lambda temp: temp.write_bytes(dense_data))
    if report_path is not None:
        text = json.dumps(report.to_dict(), indent=1, default=str)
        atomic_write(outputs["report"], lambda temp: temp.write_text(text))
    return report


def _check_outputs(source: Any, out: Any, dense: Any, report: Any) -> dict[str, Path]:
    paths = {"out": check_writable(out)}
    if dense is not None:
        paths["dense"] = check_writable(dense)
    if report is not None:
        paths["report"] = check_writable(report)
    if isinstance(source, (str, Path)):
        for label, path in paths.items():
            if Path(source).exists() and path.exists() and path.samefile(source):
                raise ReliefError(f"{path}: output ({label}) is the input model; choose another "
                                  "name (the input is never overwritten)")
    if len({p.resolve() for p in paths.values()}) != len(paths):
        raise ReliefError("--out, --dense-out and --report must be different files")
    return paths


def _load(model_or_path: Any, trust: bool, allow_factory: bool) -> LoadedModel:
    if isinstance(model_or_path, nn.Module):
        return LoadedModel(model_or_path.eval(), Path("<module>"), "module")
    return read_model(model_or_path, trust=trust, allow_factory=allow_factory)


def _example(loaded: LoadedModel, example: torch.Tensor | None,
             shape: list[int] | None) -> torch.Tensor:
    if example is None:
        shape = shape or loaded.input_shape
        if not shape:
            raise ReliefError(f"{loaded.source}: the file records no input shape; pass "
                              "--input-shape, e.g. --input-shape 1,1,28,28")
        if any(d < 1 for d in shape):
            raise ReliefError(f"--input-shape must be positive integers, got {shape}")
        example = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            loaded.model.eval()(example)
    except Exception as error:
        first = first_line(error)
        raise ReliefError(f"input shape {list(example.shape)} does not fit {loaded.source}: "
                          f"{first}") from None
    return example


def _count(report: ExportReport, model: nn.Module, compacted: nn.Module,
           compaction: dict[str, Any]) -> None:
    plain = unmasked_copy(model)
    report.params_dense = sum(p.numel() for p in plain.parameters())
    report.params_nonzero = sum(int(torch.count_nonzero(p)) for p in plain.parameters())
    report.params_compact = sum(p.numel() for p in compacted.parameters())
    report.compaction = compaction


def _metadata(report: ExportReport) -> dict[str, str]:
    formats = {t.name: t.format for t in report.tensors}
    return {"producer": f"relief_export {__version__}", "source": report.source,
            "params_dense": str(report.params_dense),
            "params_nonzero": str(report.params_nonzero),
            "params_compact": str(report.params_compact),
            "weight_formats": json.dumps(formats), "fp16_weights": str(report.fp16_weights)}


def _verify(report: ExportReport, proto: onnx.ModelProto, data: bytes, loaded: LoadedModel,
            compacted: nn.Module, example: torch.Tensor) -> None:
    verify.check_structure(proto)
    shape = list(example.shape)
    batches = {**verify.seeded_inputs(shape), **verify.real_inputs(loaded.data, shape)}
    reference = _fp16_rounded(compacted) if report.fp16_weights else loaded.model
    checks = verify.compare(data, reference, batches, FP32_TOLERANCE)
    report.verification = [{**asdict(c), "relative": c.relative} for c in checks]
    if report.fp16_weights:
        exact = verify.compare(data, loaded.model, batches, float("inf"))
        report.fp16_error_vs_fp32 = max(c.relative for c in exact)


def _fp16_rounded(model: nn.Module) -> nn.Module:
    """The function the fp16-weight file computes: weights rounded to float16 and back."""
    import copy

    rounded = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in rounded.parameters():
            if parameter.dim() > 1:
                parameter.copy_(parameter.half().float())
    return rounded


def _dense_bytes(model: nn.Module, example: torch.Tensor, opset: int) -> bytes:
    """The masked model exported as it is: what a user gets without this tool."""
    proto = to_onnx(unmasked_copy(model), example, opset)
    set_metadata(proto, {"producer": f"relief_export {__version__} (dense baseline)"})
    return proto.SerializeToString()


def tensor_table(report: ExportReport) -> str:
    return format_table(["tensor", "format", "shape", "nonzero", "stored bytes",
                         "dense bytes"],
                        [[t.name, t.format, "x".join(map(str, t.shape)), t.nonzero,
                          t.stored_bytes, t.dense_bytes] for t in report.tensors])
