"""The machine a timing was taken on, recorded beside every timing (bench JSON and tables,
the demo report)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def machine_info() -> dict[str, Any]:
    """CPU model, logical cores, 1-minute load average, onnxruntime / torch / Python versions."""
    import onnxruntime

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "load_1min": load,
            "onnxruntime": onnxruntime.__version__, "torch": _torch_version(),
            "python": platform.python_version(), "system": platform.platform(terse=True)}


def describe(info: dict[str, Any]) -> str:
    """One line: ``CPU, N cores, load L, onnxruntime V``."""
    load = "unknown" if info.get("load_1min") is None else f"{info['load_1min']:.2f}"
    return (f"{info.get('cpu')}, {info.get('cores')} cores, load {load} (1 min), "
            f"onnxruntime {info.get('onnxruntime')}, torch {info.get('torch')}")


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def _torch_version() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return str(torch.__version__)
