"""The samples int8 export reads: calibration (activation ranges), selection (which
calibration method) and evaluation (the accuracy gate).

With a data set: calibration and selection are disjoint seeded draws from its training
split, evaluation is its test split (with labels). Without one, only an explicit
``synthetic`` request gives N(0, 1) samples, and the report says so."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .. import data
from ..errors import ReliefError

SELECTION_SAMPLES = 256
EVALUATION_SAMPLES = 2000


@dataclass(frozen=True)
class Samples:
    calibration: np.ndarray
    selection: np.ndarray
    evaluation: np.ndarray
    labels: np.ndarray | None
    source: str

    @property
    def synthetic(self) -> bool:
        return self.labels is None


def int8_samples(spec: str | None, shape: list[int], count: int, synthetic: bool
                 ) -> Samples:
    """Samples of the model's input ``shape`` from the data set ``spec`` or, when
    ``synthetic``, from N(0, 1)."""
    if spec is None:
        if not synthetic:
            raise ReliefError("--int8 needs calibration data: pass --calib-data SPEC "
                              f"({data.SPEC_HELP}), or export a checkpoint that names its "
                              "data set; --calib-synthetic calibrates on random inputs "
                              "(weaker, and the report says so)")
        generator = np.random.default_rng(0)
        size = (count + SELECTION_SAMPLES + EVALUATION_SAMPLES // 4, *shape[1:])
        drawn = generator.standard_normal(size, dtype=np.float32)
        return Samples(drawn[:count], drawn[count:count + SELECTION_SAMPLES],
                       drawn[count + SELECTION_SAMPLES:], None,
                       f"{count} synthetic N(0,1) samples (--calib-synthetic)")
    train, _ = data.load(spec, "train").tensors()
    test, labels = data.load(spec, "test").tensors()
    if list(train.shape[1:]) != list(shape[1:]):
        raise ReliefError(f"calibration data {spec}: samples of shape {list(train.shape[1:])} "
                          f"do not fit the model's input {list(shape[1:])}")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    calibration = train[order[:count]].numpy()
    held_out = train[order[count:count + SELECTION_SAMPLES]].numpy()
    return Samples(calibration, held_out if len(held_out) else calibration,
                   test[:EVALUATION_SAMPLES].numpy(), labels[:EVALUATION_SAMPLES].numpy(),
                   f"{len(calibration)} training samples of {spec}")
