"""``export_onnx``: load -> compact -> emit -> [sparse compute] -> [int8] -> encode /
metadata / IR version -> verify -> write, each stage called once, in order."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
import torch
from onnx_ir.passes.common import ClearMetadataAndDocStringPass
from torch import nn

from .. import validate
from .._version import __version__
from ..bench.graph_stats import model_stats
from ..compile import compact_with_report
from ..compile.graph import unmasked_copy
from ..compile.report import CompactionReport
from ..errors import ReliefError, VerificationError
from ..files import check_output, write_files
from ..inputs import LoadedModel, read_model
from ..onnx import verify
from ..onnx.compat import max_ir_version
from ..onnx.emit import to_onnx
from ..onnx.formats import MODES
from ..onnx.integrity import SOURCE_KEY, WEIGHTS_KEY, weights_sha256
from ..onnx.passes import (
    CapIrVersion,
    ClearValueInfo,
    DropIdentityMul,
    DropZeroBiasZeroPoints,
    EncodeWeights,
    SetMetadata,
    TensorChoice,
)
from ..onnx.quantize import resolve_reduce_range
from ..onnx.sparse.timing import Setting
from .examples import examples_for, real_inputs
from .int8_stage import Int8Options, check_int8_inputs, int8_metadata, quantize_stage
from .report import ExportReport
from .sparse_stage import (
    covers_rejected,
    drop_covers,
    sparse_compute_stage,
    sparse_settings,
    tune_cache_file,
)

FP32_TOLERANCE = 1e-4
MIN_OPSET = 17
MAX_OPSET = 23
MAX_ALIGN = 1024


def export_onnx(model_or_path: nn.Module | str | Path, out_path: str | Path, *,
                example_inputs: torch.Tensor | Sequence[torch.Tensor] | None = None,
                input_shape: list[int] | None = None, weights: str = "auto",
                fp16_weights: bool = False, opset: int = 18, align: int = 8,
                dense_out: str | Path | None = None, verify_outputs: bool = True,
                trust: bool = False, allow_factory: bool = False, arch: str | None = None,
                arch_kwargs: dict[str, Any] | None = None, trust_remote_code: bool = False,
                report_path: str | Path | None = None, int8: bool = False,
                calib_data: str | None = None, calib_samples: int = 256,
                calib_method: str = "auto", calib_synthetic: bool = False,
                int8_layers: str = "auto", int8_batch: int = 64,
                accept_accuracy_drop: float = 0.0, int8_reduce_range: str = "auto",
                strict: bool = False,
                sparse_compute: str = "off", tune_batches: Sequence[int] = (1, 64),
                tune_threads: Sequence[int] = (1,), tune_cache: str | Path | None = None,
                progress: Callable[[str], None] | None = None) -> ExportReport:
    """Export a masked model to a compact ONNX file: a module, or a file (checkpoint, .pt2,
    ONNX, a state_dict with ``arch`` / ``arch_kwargs``, a Hugging Face folder, or a trusted
    pickle).

    ``align``: layers keep a multiple of this many units (onnxruntime's CPU kernels work on
    channel blocks of 8); 1 keeps the minimum. ``int8``: quantize the compacted model (see
    ``relief_export.int8``), calibrated on ``calib_data`` or the checkpoint's data set;
    ``int8_reduce_range``: 7-bit weights "on", "off", or "auto" (where this CPU lacks VNNI).
    ``sparse_compute="auto"``: each sparse layer runs as dense blocks where that measures
    faster in onnxruntime at every batch size in ``tune_batches`` and thread count in
    ``tune_threads`` (``onnx/passes/sparse_compute.py``); "off" keeps every layer whole;
    ``tune_cache``: a file that keeps those layer timings across exports.
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
                          int8_layers, int8_batch, accept_accuracy_drop, int8_reduce_range)
    options.check(int8, fp16_weights)
    tuning = sparse_settings(sparse_compute, tune_batches, tune_threads)
    cache_file = tune_cache_file(tuning, tune_cache)
    outputs = _check_outputs(model_or_path, out_path, dense_out, report_path)
    loaded = _load(model_or_path, trust=trust, allow_factory=allow_factory, arch=arch,
                   arch_kwargs=arch_kwargs, trust_remote_code=trust_remote_code)
    examples = examples_for(loaded, example_inputs, input_shape)
    if int8:
        check_int8_inputs(examples, loaded.source)
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
    sparse: dict[str, Any] = {"kept": False}
    if tuning:
        exported, sparse = sparse_compute_stage(
            exported, tuning, examples,
            {layer.name: layer.macs_before for layer in compaction.layers}, progress,
            cache_file, resolve_reduce_range(options.reduce_range) if int8 else None)
        report.sparse_compute, report.sparse_whole_model_ms = sparse["layers"], \
            sparse["whole_model_ms"]
    fp32 = ir.to_proto(exported) if int8 else None
    if fp32 is not None:
        if verify_outputs:
            _verify(report, fp32, fp32.SerializeToString(), loaded, compacted, examples)
        quantized = quantize_stage(report, fp32, loaded, list(examples[0].shape), options,
                                   progress)
        if sparse["kept"]:
            quantized = _int8_with_or_without_covers(report, quantized, sparse, loaded,
                                                     examples, options, tuning, progress)
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


def _int8_with_or_without_covers(report: ExportReport, quantized: onnx.ModelProto,
                                 sparse: dict[str, Any], loaded: LoadedModel,
                                 examples: tuple[torch.Tensor, ...], options: Int8Options,
                                 tuning: tuple[Setting, ...],
                                 progress: Callable[[str], None] | None) -> onnx.ModelProto:
    """Covers chosen in fp32 can lose in int8: the model without them is quantized too, and
    the covers stay only if the int8 model with them passes ``covers_rejected``."""
    alternative = replace(report, notes=list(report.notes))
    uncovered = quantize_stage(alternative, sparse["without_covers"], loaded,
                               list(examples[0].shape), options, progress)
    rejected = covers_rejected(uncovered, quantized, tuning, examples,
                               report.sparse_whole_model_ms, "int8, ")
    if rejected is None:
        return quantized
    drop_covers(sparse, "in int8 " + rejected)
    report.int8, report.notes = alternative.int8, alternative.notes
    return uncovered


def _check_strict(compaction: CompactionReport, source: Path) -> None:
    if compaction.dead_units_kept or compaction.uncompacted:
        whole = "; ".join(compaction.uncompacted) or "none"
        raise VerificationError(f"{source}: --strict: {compaction.dead_units_kept} dead "
                                f"unit(s) kept; left uncompacted: {whole}")


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
            **({"int8": json.dumps(int8_metadata(report.int8))} if report.int8 else {}),
            SOURCE_KEY: report.source_sha256 or "", WEIGHTS_KEY: report.weights_sha256 or ""}


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
