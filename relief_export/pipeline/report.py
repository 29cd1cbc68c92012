"""What ``export_onnx`` produced and measured, and its tables."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..onnx.passes import TensorChoice
from ..table import format_table


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
    sparse_compute: list[dict[str, Any]] = field(default_factory=list)  # LayerCompute each
    # per setting, the whole model's ms without and with the covers ("off" / "auto")
    sparse_whole_model_ms: dict[str, dict[str, float]] = field(default_factory=dict)

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
            rows[-1:-1] = int8_rows(self.int8)
        if self.sparse_compute:
            covered = [c for c in self.sparse_compute if c["chosen"] == "cover"]
            macs = sum(c["macs_cover"] if c["chosen"] == "cover" else
                       c["macs_cropped"] or c["macs_compacted"] for c in self.sparse_compute)
            rows.insert(-1, ["sparse compute: layers as dense blocks",
                             f"{len(covered)} of {len(self.sparse_compute)} "
                             f"({macs:,} layer MACs per sample)"])
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


def kept_table(report: ExportReport) -> str:
    """Per layer, the dead units kept and why (``--verbose``)."""
    return format_table(["layer", "dead units kept: why"],
                        [[layer["name"], why] for layer in report.compaction.get("layers", [])
                         for why in layer["kept_reasons"]])


def sparse_table(report: ExportReport) -> str:
    """Per layer, what sparse compute measured and chose (``--verbose``): MACs per sample
    before and after compaction, after the cover and of the nonzero weights; ms per
    setting."""
    return format_table(
        ["layer", "MACs dense", "MACs compacted", "MACs cover", "MACs nonzero", "blocks",
         "ms dense", "ms cover", "chosen"],
        [[c["name"], f"{c['macs_dense']:,}" if c["macs_dense"] is not None else "-",
          f"{c['macs_compacted']:,}", f"{c['macs_cover']:,}",
          f"{c['macs_nonzero']:,}", c["blocks"], _times(c["ms_dense"]), _times(c["ms_cover"]),
          f"{c['chosen']} ({c['why']})" + (f"; reads {c['crop']}" if c["crop"] else "")]
         for c in report.sparse_compute])


def _times(times: dict[str, float]) -> str:
    return " / ".join(f"{ms:.3f}" for ms in times.values()) or "-"


def tensor_table(report: ExportReport) -> str:
    return format_table(["tensor", "format", "shape", "nonzero", "stored bytes",
                         "dense bytes"],
                        [[t.name, t.format, "x".join(map(str, t.shape)), t.nonzero,
                          t.stored_bytes, t.dense_bytes] for t in report.tensors])


def calibration_text(int8: dict[str, Any]) -> str:
    return f"{int8['method']} on {int8['calibration']}"


def int8_rows(int8: dict[str, Any]) -> list[list[str]]:
    check = int8["check"]
    rows = [["int8: calibration", calibration_text(int8)],
            ["int8: weights", "7-bit (reduce range)" if int8["reduce_range"] else "8-bit"],
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
