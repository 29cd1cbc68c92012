"""The machine a timing was taken on, recorded beside every timing (bench JSON and tables,
the demo report)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def machine_info() -> dict[str, Any]:
    """CPU model and vector level, logical cores, 1-minute load average, onnxruntime /
    torch / Python versions."""
    import onnxruntime

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cpu": _cpu_model(), "vector": vector_level(_cpu_flags()), "cores": os.cpu_count(),
            "load_1min": load,
            "onnxruntime": onnxruntime.__version__, "torch": _torch_version(),
            "python": platform.python_version(), "system": platform.platform(terse=True)}


def describe(info: dict[str, Any]) -> str:
    """One line: ``CPU, N cores, load L, onnxruntime V``."""
    load = "unknown" if info.get("load_1min") is None else f"{info['load_1min']:.2f}"
    vector = f" ({info['vector']})" if info.get("vector") else ""
    return (f"{info.get('cpu')}{vector}, {info.get('cores')} cores, load {load} (1 min), "
            f"onnxruntime {info.get('onnxruntime')}, torch {info.get('torch')}")


VECTOR_LEVELS = (("avx512_vnni", "AVX-512 VNNI"), ("avx512f", "AVX-512"),
                 ("avx_vnni", "AVX2 VNNI"), ("avx2", "AVX2"))  # widest first


def vector_level(flags: set[str]) -> str:
    """The widest vector instruction set of ``flags`` (/proc/cpuinfo's) that onnxruntime's
    kernels use: int8 speed depends on VNNI most; "" when none is known."""
    return next((name for flag, name in VECTOR_LEVELS if flag in flags), "")


def _cpu_flags() -> set[str]:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


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
