"""Benchmark results: dataclasses, the printed table, JSON and PNG plots.

For each model beside the first (the baseline): speed-up = baseline median / model median;
MAC limit = baseline MACs / model MACs (what a dense kernel can at best gain from doing fewer
multiply-adds); efficiency = speed-up / MAC limit.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..figures import batch_axis, png_bytes, pyplot
from ..files import write_file
from ..table import format_table
from .machine import describe

SCHEMA_VERSION = 1


@dataclass
class ModelInfo:
    path: str
    file_bytes: int
    parameters: int
    nonzero: int
    macs: int
    accuracy: float | None = None
    memory_bytes: int | None = None
    precision: str = "fp32"


@dataclass(frozen=True)
class Measurement:
    """One model at one (threads, batch): latency percentiles in ms, samples per second."""

    model: str
    threads: int
    batch: int
    median_ms: float
    p90_ms: float
    p99_ms: float
    throughput: float
    session_ms: float


@dataclass
class BenchReport:
    models: list[ModelInfo]
    batch_sizes: list[int]
    threads: list[int]
    warmup: int
    repeats: int
    measurements: list[Measurement] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)

    def comparisons(self) -> list[dict[str, Any]]:
        """Speed-up, MAC limit and efficiency of every model against the first."""
        baseline = self.models[0]
        medians = {(m.model, m.threads, m.batch): m.median_ms for m in self.measurements}
        rows = []
        for info in self.models[1:]:
            limit = baseline.macs / info.macs if info.macs else None
            for threads in self.threads:
                for batch in self.batch_sizes:
                    speedup = medians[(baseline.path, threads, batch)] / \
                        medians[(info.path, threads, batch)]
                    rows.append({"model": info.path, "threads": threads, "batch": batch,
                                 "speedup": speedup, "mac_limit": limit,
                                 "efficiency": speedup / limit if limit else None})
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "batch_sizes": self.batch_sizes,
                "threads": self.threads, "warmup": self.warmup, "repeats": self.repeats,
                "models": [asdict(m) for m in self.models],
                "measurements": [asdict(m) for m in self.measurements],
                "comparisons": self.comparisons(), "machine": self.machine}

    def json_bytes(self) -> bytes:
        return json.dumps(self.to_dict(), indent=1).encode()

    def write_json(self, path: str | Path) -> None:
        write_file(path, self.json_bytes(), inputs=self.inputs())

    def inputs(self) -> list[str]:
        """The benchmarked files (never overwritten by the report's outputs)."""
        return [m.path for m in self.models]

    def table(self) -> str:
        models = format_table(
            ["model", "precision", "file bytes", "parameters", "nonzero", "MACs", "accuracy",
             "peak memory MB"],
            [[m.path, m.precision, f"{m.file_bytes:,}", f"{m.parameters:,}", f"{m.nonzero:,}",
              f"{m.macs:,}", None if m.accuracy is None else f"{100 * m.accuracy:.2f}%",
              None if m.memory_bytes is None else f"{m.memory_bytes / 2**20:.1f}"]
             for m in self.models])
        speed = {(c["model"], c["threads"], c["batch"]): c for c in self.comparisons()}
        rows = []
        for m in self.measurements:
            c = speed.get((m.model, m.threads, m.batch), {})
            rows.append([m.model, m.threads, m.batch, f"{m.median_ms:.3f}", f"{m.p90_ms:.3f}",
                         f"{m.p99_ms:.3f}", f"{m.throughput:,.0f}", f"{m.session_ms:.0f}",
                         _ratio(c.get("speedup")), _ratio(c.get("mac_limit")),
                         _ratio(c.get("efficiency"))])
        timing = format_table(["model", "threads", "batch", "median ms", "p90 ms", "p99 ms",
                               "samples/s", "session ms", "speed-up", "MAC limit",
                               "measured/limit"], rows)
        machine = f"machine: {describe(self.machine)}\n" if self.machine else ""
        return f"{machine}{models}\n\n{timing}"

    def plot(self, path: str | Path) -> None:
        write_file(path, self.plot_bytes(), inputs=self.inputs())

    def plot_bytes(self) -> bytes:
        """PNG: latency vs batch size per model and thread count, and file sizes."""
        plt = pyplot()
        figure, (latency, sizes) = plt.subplots(1, 2, figsize=(11, 4))
        for info in self.models:
            for threads in self.threads:
                points = sorted((m.batch, m.median_ms) for m in self.measurements
                                if m.model == info.path and m.threads == threads)
                latency.plot([b for b, _ in points], [t for _, t in points], "o-",
                             label=f"{Path(info.path).name}, {threads} thread(s)")
        batch_axis(latency, self.batch_sizes)
        latency.set_yscale("log")
        latency.set_ylabel("median latency (ms)")
        latency.set_title("onnxruntime CPU latency (lower is better)")
        latency.legend(fontsize=8)
        names = [Path(m.path).name for m in self.models]
        bars = sizes.bar(names, [m.file_bytes / 1e6 for m in self.models], color="tab:blue")
        sizes.bar_label(bars, [f"{m.file_bytes / 1e6:.3g} MB" for m in self.models],
                        fontsize=8)
        sizes.set_ylabel("file size on disk (MB, external data included)")
        sizes.set_title("file size")
        sizes.tick_params(axis="x", labelrotation=20)
        figure.tight_layout()
        return png_bytes(figure)


def _ratio(value: float | None) -> str | None:
    return None if value is None else f"{value:.2f}x"
