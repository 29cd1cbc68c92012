"""matplotlib without a screen, and figures as PNG bytes for the one writer (files.py)."""

from __future__ import annotations

import io
from typing import Any


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(figure: Any, dpi: int = 110) -> bytes:
    """The figure rendered as PNG, then closed."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    pyplot().close(figure)
    return buffer.getvalue()


def batch_axis(axis: Any, batch_sizes: list[int]) -> None:
    """A log2 batch-size axis ticked at exactly the measured sizes, as plain numbers."""
    from matplotlib.ticker import NullLocator

    axis.set_xscale("log", base=2)
    axis.set_xticks(sorted(batch_sizes), [str(b) for b in sorted(batch_sizes)])
    axis.xaxis.set_minor_locator(NullLocator())
    axis.set_xlabel("batch size")
