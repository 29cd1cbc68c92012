"""Peak memory of running a model: peak RSS (Linux VmHWM, which starts afresh at exec, unlike
ru_maxrss) of a child process that loads the ONNX file into onnxruntime and runs one batch,
minus that of a child that only imports onnxruntime."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_SCRIPT = """
import sys
import numpy as np
import onnxruntime as ort
if len(sys.argv) > 1:
    path, batch, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    shape = [batch] + [d if isinstance(d, int) else 1 for d in feed.shape[1:]]
    dtype = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}.get(feed.type, np.float32)
    session.run(None, {feed.name: np.zeros(shape, dtype)})
with open("/proc/self/status") as status:  # VmHWM: this address space's peak RSS
    peak = next(line for line in status if line.startswith("VmHWM:"))
print(int(peak.split()[1]) * 1024)
"""


def _max_rss(arguments: list[str]) -> int | None:
    try:
        result = subprocess.run([sys.executable, "-c", _SCRIPT, *arguments],
                                capture_output=True, text=True, timeout=300, check=True)
        return int(result.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError, OSError):
        return None


def peak_memory(path: Path, batch: int, threads: int) -> int | None:
    """Bytes of peak RSS attributable to the model (None when it cannot be measured)."""
    baseline = _max_rss([])
    loaded = _max_rss([str(path), str(batch), str(threads)])
    if baseline is None or loaded is None:
        return None
    return max(0, loaded - baseline)
