"""Arrays people keep: ``npz:FILE`` and ``csv:FILE``.

npz: arrays ``x`` and ``y`` (a seeded 20% of each class is the test split), or ``x_train``,
``y_train``, ``x_test``, ``y_test``; read with ``allow_pickle=False``. x: uint8 (scaled to
[0, 1]), floats, or integer token ids; y: integer classes (0..K-1, per sample or per token,
-100 ignored) or float regression targets.

csv: one sample per row, numbers only; a first row with any non-number is the header. The
label column is ``label_column=NAME|INDEX`` (default: the column named ``label``, else the
last one); the other columns are float features. Integer labels are classes; with any
fractional label, regression targets.
"""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import numpy as np
import torch

from .. import validate
from ..errors import ReliefError, first_line
from .spec import Spec, take
from .split import holdout
from .tensors import ImageDataset

IGNORED_LABEL = -100
CSV_OPTIONS = {"label_column": ""}


def load_npz(spec: Spec, split: str) -> ImageDataset:
    take(spec, {})
    path = _existing(spec, "npz")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise ReliefError(f"{path}: not a readable .npz file ({first_line(error)}); write it "
                          "with numpy.savez(path, x=..., y=...)") from None
    if {"x_train", "y_train", "x_test", "y_test"} <= set(arrays):
        return _dataset(arrays[f"x_{split}"], arrays[f"y_{split}"], f"{path} [{split}]")
    if {"x", "y"} <= set(arrays):
        return holdout(_dataset(arrays["x"], arrays["y"], str(path)), split, str(path))
    raise ReliefError(f"{path}: needs arrays x and y (or x_train, y_train, x_test, y_test), "
                      f"holds {sorted(arrays) or 'none'}")


def load_csv(spec: Spec, split: str) -> ImageDataset:
    options = take(spec, CSV_OPTIONS)
    path = _existing(spec, "csv")
    try:
        rows = [row for row in csv.reader(io.StringIO(path.read_text(encoding="utf-8")))
                if any(cell.strip() for cell in row)]
    except (UnicodeDecodeError, csv.Error) as error:
        raise ReliefError(f"{path}: not a readable CSV file ({first_line(error)})") from None
    header = rows[0] if rows and not all(_is_number(c) for c in rows[0]) else None
    body = rows[1:] if header else rows
    if not body:
        raise ReliefError(f"{path}: no data rows")
    width = len(body[0])
    column = _label_column(options["label_column"], header, width, path)
    values = np.empty((len(body), width), dtype=np.float64)
    for number, row in enumerate(body, start=2 if header else 1):
        if len(row) != width:
            raise ReliefError(f"{path}: row {number} has {len(row)} fields, the first data row "
                              f"{width}")
        for position, cell in enumerate(row):
            if not _is_number(cell):
                what = "label" if position == column else "value"
                raise ReliefError(f"{path}: row {number}, column {position + 1}: {what} "
                                  f"{cell!r} is not a number")
            values[number - (2 if header else 1), position] = float(cell)
    features = np.delete(values, column, axis=1).astype(np.float32)
    labels = values[:, column]
    labels = labels.astype(np.int64) if np.all(labels == np.round(labels)) \
        else labels.astype(np.float32)
    return holdout(_dataset(features, labels, str(path)), split, str(path))


def _existing(spec: Spec, kind: str) -> Path:
    path = Path(spec.argument)
    if not spec.argument or not path.is_file():
        raise ReliefError(f"{kind}:{spec.argument}: no such file")
    return path


def _is_number(text: str) -> bool:
    try:
        return np.isfinite(float(text))
    except ValueError:
        return False


def _label_column(name: str, header: list[str] | None, width: int, path: Path) -> int:
    if width < 2:
        raise ReliefError(f"{path}: needs at least one feature column and a label column")
    if not name:
        return header.index("label") if header and "label" in header else width - 1
    if header and name in header:
        return header.index(name)
    if name.isdigit() and int(name) < width:
        return int(name)
    raise ReliefError(f"{path}: no label column {name!r} (columns: "
                      f"{', '.join(header) if header else f'0..{width - 1}'})")


def _dataset(x: np.ndarray, y: np.ndarray, where: str) -> ImageDataset:
    if x.dtype.kind not in "uif" or y.dtype.kind not in "uif":
        raise ReliefError(f"{where}: x and y must hold numbers, got {x.dtype} and {y.dtype}")
    if x.ndim < 2 or len(x) != len(y) or len(x) == 0:
        raise ReliefError(f"{where}: x must be N x ... with N >= 1 samples and y hold one label "
                          f"per sample; got x {x.shape}, y {y.shape}")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise ReliefError(f"{where}: x holds NaN or infinite values")
    validate.allocation(where, x.astype(np.float32).nbytes if x.dtype != np.uint8 else x.nbytes)
    images = torch.from_numpy(np.ascontiguousarray(x if x.dtype.kind == "f" or x.dtype == np.uint8
                                                   else x.astype(np.int64)))
    if images.is_floating_point():
        images = images.float()
    if y.dtype.kind == "f":
        if not np.isfinite(y).all():
            raise ReliefError(f"{where}: y holds NaN or infinite values")
        return ImageDataset(images, torch.from_numpy(y.astype(np.float32)), 0)
    labels = torch.from_numpy(y.astype(np.int64))
    counted = labels[labels != IGNORED_LABEL]
    if counted.numel() == 0 or int(counted.min()) < 0:
        raise ReliefError(f"{where}: class labels must be 0..K-1 (-100 = ignored); got minimum "
                          f"{int(labels.min())}")
    return ImageDataset(images, labels, int(counted.max()) + 1)
