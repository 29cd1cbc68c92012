"""``hf:DIR``: a Hugging Face ``datasets`` data set saved with ``save_to_disk``, read offline
with ``load_from_disk``. Splits "train" and "test" (or "validation"); a single split, or a
DatasetDict without a test split, holds out a seeded 20% of each class.

Text columns are tokenized with the model's saved tokenizer (``tokenizer=DIR``, which the
command line fills with MODEL when MODEL is a Hugging Face folder): padded and truncated to
``max_length`` (default 128) token ids. Options: ``text_column`` (default ``text``; a second
one with ``,`` for sentence pairs), ``label_column`` (default ``label``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ReliefError, first_line
from .spec import Spec, take
from .split import holdout
from .tensors import ImageDataset

OPTIONS = {"text_column": "text", "label_column": "label", "tokenizer": "",
           "max_length": "128"}
TEST_SPLITS = ("test", "validation")


def load_hf_dataset(spec: Spec, split: str) -> ImageDataset:
    options = take(spec, OPTIONS)
    folder = Path(spec.argument)
    if not folder.is_dir():
        raise ReliefError(f"hf:{folder}: no such folder (a data set saved with "
                          "datasets' save_to_disk)")
    stored = _load_from_disk(folder)
    parts: list[str] = list(stored.keys()) if hasattr(stored, "keys") else []
    test_name = next((name for name in TEST_SPLITS if name in parts), None)
    if "train" in parts and test_name is not None:
        return _tokenized(stored[split if split == "train" else test_name], options, folder)
    whole = stored[next(iter(parts))] if parts else stored
    return holdout(_tokenized(whole, options, folder), split, f"hf:{folder}")


def _load_from_disk(folder: Path) -> Any:
    try:
        import datasets
    except ImportError:
        raise ReliefError(f"--data hf:{folder} needs the datasets package: "
                          "pip install datasets") from None
    try:
        return datasets.load_from_disk(str(folder))
    except Exception as error:  # the library raises many kinds for a damaged folder
        raise ReliefError(f"hf:{folder}: not a data set saved with save_to_disk "
                          f"({first_line(error)})") from None


def _tokenized(table: Any, options: dict[str, str], folder: Path) -> ImageDataset:
    columns = options["text_column"].split(",")
    label = options["label_column"]
    for name in [*columns, label]:
        if name not in table.column_names:
            raise ReliefError(f"hf:{folder}: no column {name!r} (columns: "
                              f"{', '.join(table.column_names)}); name it with "
                              "--text-column / --label-column")
    if len(table) == 0:
        raise ReliefError(f"hf:{folder}: the split holds no rows")
    texts = [list(table[name]) for name in columns]
    if not all(isinstance(v, str) for column in texts for v in column):
        raise ReliefError(f"hf:{folder}: text column(s) {columns} must hold strings")
    labels = np.asarray(list(table[label]))
    if labels.dtype.kind not in "uif" or labels.ndim != 1:
        raise ReliefError(f"hf:{folder}: label column {label!r} must hold one number per row")
    ids = _tokenize(texts, options, folder)
    if labels.dtype.kind == "f":
        return ImageDataset(ids, torch.from_numpy(labels.astype(np.float32)), 0)
    if labels.min() < 0:
        raise ReliefError(f"hf:{folder}: class labels must be 0..K-1, got {labels.min()}")
    feature = table.features.get(label)
    classes = getattr(feature, "num_classes", None) or int(labels.max()) + 1
    return ImageDataset(ids, torch.from_numpy(labels.astype(np.int64)), classes)


def _tokenize(texts: list[list[str]], options: dict[str, str], folder: Path) -> torch.Tensor:
    if not options["tokenizer"]:
        raise ReliefError(f"hf:{folder}: text needs the model's tokenizer: pass --tokenizer DIR "
                          "(a folder saved with save_pretrained)")
    max_length = options["max_length"]
    if not max_length.isdigit() or not 1 <= int(max_length) <= 65536:
        raise ReliefError(f"hf:{folder}: max_length must be an integer in 1..65536, "
                          f"got {max_length!r}")
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(options["tokenizer"], local_files_only=True)
    except ImportError:
        raise ReliefError("tokenizing needs the transformers package: "
                          "pip install transformers") from None
    except Exception as error:
        raise ReliefError(f"{options['tokenizer']}: no tokenizer saved there "
                          f"({first_line(error)})") from None
    encoded = tokenizer(*texts, padding="max_length", truncation=True,
                        max_length=int(max_length), return_tensors="pt")
    return encoded["input_ids"].to(torch.int64)
