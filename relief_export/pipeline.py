"""The one place that composes the stages: ``export_onnx`` runs
load (checkpoint) -> compact (compile) -> emit -> [int8] -> encode / metadata / IR version
(ONNX passes) -> verify -> write (files). The stages below see only modules and files."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
import torch
from onnx_ir.passes.common import ClearMetadataAndDocStringPass
from torch import nn

from . import data, validate
from ._version import __version__
from .bench.graph_stats import model_stats
from .checkpoint import LoadedModel, read_model
from .compile import compact_with_report
from .compile.graph import set_mode, unmasked_copy
from .compile.report import CompactionReport
from .errors import ReliefError, VerificationError, first_line
from .files import check_output, write_files
from .int8 import LAYER_MODES, METHODS, int8_samples, to_int8
from .onnx import verify
from .onnx.compat import max_ir_version
from .onnx.emit import to_onnx
from .onnx.formats import MODES
from .onnx.integrity import SOURCE_KEY, WEIGHTS_KEY, weights_sha256
from .onnx.passes import (
    CapIrVersion,
    ClearValueInfo,
    DropIdentityMul,
    DropZeroBiasZeroPoints,
    EncodeWeights,
    SetMetadata,
    TensorChoice,
)
from .table import format_table

FP32_TOLERANCE = 1e-4
MIN_OPSET = 17
MAX_OPSET = 23
MAX_ALIGN = 1024


@dataclass
class ExportReport:
    """What ``export_onnx`` produced and measured."""

    source: str
    out: str
    weights: str
    fp16_weights: bool
    params_dense: int = 0
    params_nonzero: int = 0
    params_compact: int = 0  # in the written file, counted as bench counts (graph_stats)
    nonzero_compact: int = 0
    macs_compact: int = 0
    file_bytes: int = 0
    dense_file_bytes: int | None = None
    verification: list[dict[str, Any]] = field(default_factory=list)
    fp16_error_vs_fp32: float | None = None
    seconds: float = 0.0
    tensors: list[TensorChoice] = field(default_factory=list)
    compaction: dict[str, Any] = field(default_factory=dict)
    source_sha256: str | None = None
    notes: list[str] = field(default_factory=list)
    weights_sha256: str | None = None
    int8: dict[str, Any] | None = None
    compaction_text: str = ""  # the compaction report as printed

    @property
    def bytes_per_nonzero(self) -> float:
        return self.file_bytes / max(self.params_nonzero, 1)

    @property
    def max_relative_error(self) -> float | None:
        return max((c["relative"] for c in self.verification), default=None)

    def to_dict(self) -> dict[str, Any]:
        fields = {k: v for k, v in asdict(self).items() if k != "compaction_text"}
        return {**fields, "bytes_per_nonzero": self.bytes_per_nonzero,
                "max_relative_error": self.max_relative_error}

    def summary(self) -> str:
        dense = f"{self.dense_file_bytes:,}" if self.dense_file_bytes else "(use --dense-out)"
        error = "skipped (--no-verify)" if self.max_relative_error is None \
            else f"{self.max_relative_error:.2e}"
        rows = [["parameters (dense)", f"{self.params_dense:,}"],
                ["nonzero parameters", f"{self.params_nonzero:,}"],
                ["parameters in this file", f"{self.params_compact:,}"],
                ["nonzero parameters in this file", f"{self.nonzero_compact:,}"],
                ["MACs per sample in this file", f"{self.macs_compact:,}"],
                ["dead units kept (--strict fails on them)",
                 f"{self.compaction.get('dead_units_kept', 0):,}"],
                ["file bytes: dense ONNX", dense],
                ["file bytes: this model", f"{self.file_bytes:,}"],
                ["bytes per nonzero weight", f"{self.bytes_per_nonzero:.2f}"],
                ["verification: max relative error", error],
                ["seconds", f"{self.seconds:.1f}"]]
        if self.fp16_error_vs_fp32 is not None:
            rows.insert(-1, ["fp16 weights: relative error vs fp32",
                             f"{self.fp16_error_vs_fp32:.2e}"])
        if self.int8 is not None:
            rows[-1:-1] = _int8_rows(self.int8)
        formats = ", ".join(f"{f} x{n}" for f, n in self._format_counts().items())
        whole = [f"left uncompacted: {region}"
                 for region in self.compaction.get("uncompacted", [])]
        return "\n".join([format_table(["", self.out], rows), f"weight formats: {formats}",
                          *whole])

    def _format_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for tensor in self.tensors:
            counts[tensor.format] = counts.get(tensor.format, 0) + 1
        return counts


def export_onnx(model_or_path: nn.Module | str | Path, out_path: str | Path, *,
                example_inputs: torch.Tensor | Sequence[torch.Tensor] | None = None,
                input_shape: list[int] | None = None, weights: str = "auto",
                fp16_weights: bool = False, opset: int = 18, align: int = 8,
                dense_out: str | Path | None = None, verify_outputs: bool = True,
                trust: bool = False, allow_factory: bool = False, arch: str | None = None,
                arch_kwargs: dict[str, Any] | None = None,
                report_path: str | Path | None = None, int8: bool = False,
                calib_data: str | None = None, calib_samples: int = 256,
                calib_method: str = "auto", calib_synthetic: bool = False,
                int8_layers: str = "auto", int8_batch: int = 64,
                accept_accuracy_drop: float = 0.0, strict: bool = False,
                progress: Callable[[str], None] | None = None) -> ExportReport:
    """Export a masked model to a compact ONNX file: a module, or a file (checkpoint, .pt2,
    ONNX, a state_dict with ``arch`` / ``arch_kwargs``, or a trusted pickle).

    ``align``: layers keep a multiple of this many units (onnxruntime's CPU kernels work on
    channel blocks of 8); 1 keeps the minimum. ``int8``: quantize the compacted model (see
    ``relief_export.int8``), calibrated on ``calib_data`` or the checkpoint's data set.
    Output files are written only once complete and verified; the input is never modified.
    """
    start = time.perf_counter()
    validate.choice("weights", weights, list(MODES))
    validate.integer("opset", opset, MIN_OPSET, MAX_OPSET)
    validate.integer("align", align, 1, MAX_ALIGN)
    for name, value in (("fp16_weights", fp16_weights), ("verify_outputs", verify_outputs),
                        ("trust", trust), ("allow_factory", allow_factory), ("int8", int8),
                        ("strict", strict)):
        validate.flag(name, value)
    options = Int8Options(calib_data, calib_samples, calib_method, calib_synthetic,
                          int8_layers, int8_batch, accept_accuracy_drop)
    options.check(int8, fp16_weights)
    outputs = _check_outputs(model_or_path, out_path, dense_out, report_path)
    loaded = _load(model_or_path, trust=trust, allow_factory=allow_factory, arch=arch,
                   arch_kwargs=arch_kwargs)
    examples = _examples(loaded, example_inputs, input_shape)
    if int8:
        _check_int8_inputs(examples, loaded.source)
    report = ExportReport(str(loaded.source), str(out_path), weights, fp16_weights,
                          notes=list(loaded.notes))
    compacted, compaction = compact_with_report(loaded.model, examples, fold_batchnorm=True,
                                                align=align)
    if strict:
        _check_strict(compaction, loaded.source)
    exported = to_onnx(compacted, examples, opset)
    ir.passes.Sequential(DropIdentityMul(), ClearMetadataAndDocStringPass())(exported)
    report.source_sha256 = loaded.sha256
    _count(report, loaded.model, compaction.to_dict())
    report.compaction_text = str(compaction)
    fp32 = ir.to_proto(exported) if int8 else None
    if fp32 is not None:
        if verify_outputs:
            _verify(report, fp32, fp32.SerializeToString(), loaded, compacted, examples)
        quantized = _quantize(report, fp32, loaded, list(examples[0].shape), options,
                              progress)
        exported = ir.serde.deserialize_model(quantized)
    encode = EncodeWeights(MODES[weights], np.float16 if fp16_weights else np.float32)
    ir.passes.PassManager([encode, DropZeroBiasZeroPoints(), ClearValueInfo(),
                           CapIrVersion(max_ir_version())])(exported)
    _count_file(report, ir.to_proto(exported))
    SetMetadata(lambda model: _metadata(report, encode.choices, model))(exported)
    report.tensors = encode.choices
    proto = ir.to_proto(exported)
    data = proto.SerializeToString()
    if fp32 is not None:
        verify.check_structure(proto)
        verify.same_outputs(data, quantized.SerializeToString(),
                            verify.seeded_inputs(examples))
    elif verify_outputs:
        _verify(report, proto, data, loaded, compacted, examples)
    dense_data = _dense_bytes(loaded.model, examples, opset) if dense_out else None
    report.file_bytes = len(data)
    report.dense_file_bytes = len(dense_data) if dense_data is not None else None
    report.seconds = time.perf_counter() - start
    files: dict[str | Path, bytes] = {outputs["out"]: data}
    if dense_data is not None:
        files[outputs["dense"]] = dense_data
    if report_path is not None:
        files[outputs["report"]] = json.dumps(report.to_dict(), indent=1, default=str).encode()
    write_files(files, inputs=_inputs(model_or_path))
    return report


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

    def check(self, int8: bool, fp16: bool) -> None:
        validate.flag("calib_synthetic", self.calib_synthetic)
        validate.choice("calib_method", self.calib_method, METHODS)
        validate.choice("int8_layers", self.layers, LAYER_MODES)
        validate.integer("calib_samples", self.calib_samples, 1, 100_000)
        validate.integer("int8_batch", self.batch, 1, 4096)
        validate.number("accept_accuracy_drop", self.accept_drop, 0, 100)
        if int8 and fp16:
            raise ReliefError("--int8 and --fp16-weights exclude each other: int8 stores "
                              "weights as int8 already")
        if not int8 and (self.calib_data is not None or self.calib_synthetic
                         or self.accept_drop):
            raise ReliefError("the calibration options apply to int8 export only; add --int8")


def _quantize(report: ExportReport, fp32: onnx.ModelProto, loaded: LoadedModel,
              shape: list[int], options: Int8Options,
              progress: Callable[[str], None] | None) -> onnx.ModelProto:
    """The int8 stage: samples, to_int8, and what it chose in the report."""
    samples = int8_samples(options.calib_data or loaded.data, shape, options.calib_samples,
                           options.calib_synthetic)
    quantized, int8_report = to_int8(fp32, samples, method=options.calib_method,
                                     layers=options.layers, batch=options.batch,
                                     accept_drop=options.accept_drop, progress=progress)
    report.int8 = int8_report.to_dict()
    if int8_report.chosen == "fp32":
        times = int8_report.whole_model_ms
        report.notes.append(
            f"--int8: fp32 measured fastest here ({times['fp32']:.2f} ms against "
            f"{min(times['int8 per layer'], times['int8 everywhere']):.2f} ms in int8 at "
            f"batch {options.batch}); the file is fp32 (--int8-layers all forces int8)")
    return quantized


def _check_strict(compaction: CompactionReport, source: Path) -> None:
    if compaction.dead_units_kept or compaction.uncompacted:
        whole = "; ".join(compaction.uncompacted) or "none"
        raise VerificationError(f"{source}: --strict: {compaction.dead_units_kept} dead "
                                f"unit(s) kept; left uncompacted: {whole}")


def _calibration_text(int8: dict[str, Any]) -> str:
    return f"{int8['method']} on {int8['calibration']}"


def _int8_rows(int8: dict[str, Any]) -> list[list[str]]:
    check = int8["check"]
    rows = [["int8: calibration", _calibration_text(int8)],
            ["int8: layers kept in fp32", ", ".join(int8["fp32_layers"]) or "none"],
            ["int8: top-1 agreement with fp32",
             f"{100 * check['agreement']:.2f}% of {check['samples']} samples"]]
    if check["fp32_accuracy"] is not None:
        rows.append(["int8: test accuracy fp32 -> int8",
                     f"{100 * check['fp32_accuracy']:.2f}% -> "
                     f"{100 * check['int8_accuracy']:.2f}%"])
    if int8["whole_model_ms"]:
        timed = ", ".join(f"{k} {v:.2f}" for k, v in int8["whole_model_ms"].items())
        rows.append([f"int8: ms at batch {int8['batch']}, 1 thread", timed])
    return rows


def _inputs(source: Any) -> list[Path]:
    return [Path(source)] if isinstance(source, (str, Path)) else []


def _check_outputs(source: Any, out: Any, dense: Any, report: Any) -> dict[str, Path]:
    inputs = _inputs(source)
    paths = {"out": check_output(out, inputs=inputs)}
    if dense is not None:
        paths["dense"] = check_output(dense, inputs=inputs)
    if report is not None:
        paths["report"] = check_output(report, inputs=inputs)
    if len({p.resolve() for p in paths.values()}) != len(paths):
        raise ReliefError("--out, --dense-out and --report must be different files")
    return paths


def _load(model_or_path: Any, **source: Any) -> LoadedModel:
    if isinstance(model_or_path, nn.Module):
        return LoadedModel(model_or_path.eval(), Path("<module>"), "module")
    if not isinstance(model_or_path, (str, Path)):
        raise ReliefError(f"model_or_path must be an nn.Module or a file name, got "
                          f"{type(model_or_path).__name__}")
    return read_model(model_or_path, **source)


def _examples(loaded: LoadedModel, given: torch.Tensor | Sequence[torch.Tensor] | None,
              shape: list[int] | None) -> tuple[torch.Tensor, ...]:
    """The example inputs: given, or those the file records, or seeded U(0, 1) of ``shape``
    (or the file's input shape); checked to run through the model."""
    if given is not None:
        examples = validate.examples(given)
    elif shape is None and loaded.example_inputs:
        examples = loaded.example_inputs
    else:
        shape = shape or loaded.input_shape
        if not shape:
            raise ReliefError(f"{loaded.source}: the file records no input shape; pass "
                              "--input-shape, e.g. --input-shape 1,1,28,28")
        shape = validate.shape("input shape", shape)
        examples = (torch.rand(shape, generator=torch.Generator().manual_seed(0)),)
    try:
        with torch.no_grad():
            set_mode(loaded.model, training=False)
            loaded.model(*examples)
    except Exception as error:
        first = first_line(error)
        shapes = ", ".join(str(list(x.shape)) for x in examples)
        raise ReliefError(f"input shape {shapes} does not fit {loaded.source}: "
                          f"{first}") from None
    _check_batch_free(loaded, examples)
    return examples


def _check_batch_free(loaded: LoadedModel, examples: tuple[torch.Tensor, ...]) -> None:
    """The export has a dynamic batch axis and is verified at other batch sizes: a model
    whose graph fixes its batch size cannot be exported."""
    other = examples[0].shape[0] + 1
    try:
        with torch.no_grad():
            loaded.model(*(x[:1].expand(other, *x.shape[1:]) for x in examples))
    except Exception as error:
        raise ReliefError(f"{loaded.source}: the model runs at batch size "
                          f"{examples[0].shape[0]} but not {other} ({first_line(error)}); "
                          "its graph fixes the batch size: export it with a dynamic batch "
                          "axis (torch.export.export(..., dynamic_shapes=...) with "
                          "torch.export.Dim.AUTO on axis 0)") from None


def _check_int8_inputs(examples: tuple[torch.Tensor, ...], source: Path) -> None:
    if len(examples) != 1 or not examples[0].is_floating_point():
        raise ReliefError(f"{source}: --int8 calibrates models with one float input; this "
                          f"one takes {len(examples)} input(s) "
                          f"({', '.join(str(x.dtype) for x in examples)})")


def _count_file(report: ExportReport, proto: onnx.ModelProto) -> None:
    """The file's parameters, nonzeros and MACs, as bench and inspect count them."""
    stats = model_stats(proto, report.out)
    report.params_compact, report.nonzero_compact = stats.parameters, stats.nonzero
    report.macs_compact = stats.macs


def _count(report: ExportReport, model: nn.Module, compaction: dict[str, Any]) -> None:
    plain = unmasked_copy(model)
    report.params_dense = sum(p.numel() for p in plain.parameters())
    report.params_nonzero = sum(int(torch.count_nonzero(p)) for p in plain.parameters())
    report.compaction = compaction


def _metadata(report: ExportReport, tensors: list[TensorChoice], model: ir.Model
              ) -> dict[str, str]:
    """What the file records about itself (read by ``relief-export inspect``)."""
    report.weights_sha256 = weights_sha256(model)
    formats = {t.name: t.format for t in tensors}
    return {"producer": f"relief_export {__version__}", "source": report.source,
            "params_dense": str(report.params_dense),
            "params_nonzero": str(report.params_nonzero),
            "params_compact": str(report.params_compact),
            "weight_formats": json.dumps(formats), "fp16_weights": str(report.fp16_weights),
            **({"int8": json.dumps(_int8_metadata(report.int8))} if report.int8 else {}),
            SOURCE_KEY: report.source_sha256 or "", WEIGHTS_KEY: report.weights_sha256 or ""}


def _int8_metadata(int8: dict[str, Any]) -> dict[str, Any]:
    """What inspect shows of an int8 file: how each layer runs and how that was decided (the
    timings stay in the --report JSON)."""
    int8_layers = [c["name"] for c in int8["layers"] if c["int8"]]
    return {"calibration": _calibration_text(int8),
            "chosen": int8["chosen"], "fp32_layers": int8["fp32_layers"],
            "measured_int8": int8_layers if int8["layers"] else None}


def _verify(report: ExportReport, proto: Any, data: bytes, loaded: LoadedModel,
            compacted: nn.Module, examples: tuple[torch.Tensor, ...]) -> None:
    verify.check_structure(proto)
    batches: dict[str, Any] = dict(verify.seeded_inputs(examples))
    if len(examples) == 1:
        batches.update(real_inputs(loaded.data, list(examples[0].shape)))
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


def _dense_bytes(model: nn.Module, examples: tuple[torch.Tensor, ...], opset: int) -> bytes:
    """The masked model exported as it is: what a user gets without this tool."""
    exported = to_onnx(unmasked_copy(model), examples, opset)
    ir.passes.Sequential(CapIrVersion(max_ir_version()), SetMetadata(
        {"producer": f"relief_export {__version__} (dense baseline)"}))(exported)
    return ir.to_proto(exported).SerializeToString()


def real_inputs(spec: str | None, shape: list[int], count: int = 64) -> dict[str, torch.Tensor]:
    """Test samples of the data set a checkpoint names, when they load and fit."""
    if not spec:
        return {}
    try:
        images, _ = data.load(spec, "test").tensors()
    except ReliefError:
        return {}
    if list(images.shape[1:]) != list(shape[1:]):
        return {}
    return {f"{min(count, len(images))} test samples of {spec}": images[:count]}


def kept_table(report: ExportReport) -> str:
    """Per layer, the dead units kept and why (``--verbose``)."""
    return format_table(["layer", "dead units kept: why"],
                        [[layer["name"], why] for layer in report.compaction.get("layers", [])
                         for why in layer["kept_reasons"]])


def tensor_table(report: ExportReport) -> str:
    return format_table(["tensor", "format", "shape", "nonzero", "stored bytes",
                         "dense bytes"],
                        [[t.name, t.format, "x".join(map(str, t.shape)), t.nonzero,
                          t.stored_bytes, t.dense_bytes] for t in report.tensors])
