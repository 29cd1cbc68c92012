"""The example inputs an export traces and verifies with, and real test samples."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .. import data, validate
from ..compile.graph import set_mode
from ..errors import ReliefError, first_line
from ..inputs import LoadedModel


def examples_for(loaded: LoadedModel, given: torch.Tensor | Sequence[torch.Tensor] | None,
                 shape: list[int] | None) -> tuple[torch.Tensor, ...]:
    """The example inputs: given, or those the file records, or seeded U(0, 1) of ``shape``
    (or the file's input shape); checked to run through the model."""
    if given is not None:
        examples = validate.examples(given)
    elif shape is None and loaded.example_inputs:
        examples = loaded.example_inputs
    else:
        shape = shape or loaded.input_shape
        if not shape:
            raise ReliefError(f"{loaded.source}: the file records no input shape; pass "
                              "--input-shape, e.g. --input-shape 1,1,28,28")
        shape = validate.shape("input shape", shape)
        examples = (torch.rand(shape, generator=torch.Generator().manual_seed(0)),)
    try:
        with torch.no_grad():
            set_mode(loaded.model, training=False)
            loaded.model(*examples)
    except Exception as error:
        first = first_line(error)
        shapes = ", ".join(str(list(x.shape)) for x in examples)
        raise ReliefError(f"input shape {shapes} does not fit {loaded.source}: "
                          f"{first}") from None
    _check_batch_free(loaded, examples)
    return examples


def _check_batch_free(loaded: LoadedModel, examples: tuple[torch.Tensor, ...]) -> None:
    """The export has a dynamic batch axis and is verified at other batch sizes: a model
    whose graph fixes its batch size cannot be exported."""
    other = examples[0].shape[0] + 1
    try:
        with torch.no_grad():
            loaded.model(*(x[:1].expand(other, *x.shape[1:]) for x in examples))
    except Exception as error:
        raise ReliefError(f"{loaded.source}: the model runs at batch size "
                          f"{examples[0].shape[0]} but not {other} ({first_line(error)}); "
                          "its graph fixes the batch size: export it with a dynamic batch "
                          "axis (torch.export.export(..., dynamic_shapes=...) with "
                          "torch.export.Dim.AUTO on axis 0)") from None


def real_inputs(spec: str | None, shape: list[int], count: int = 64) -> dict[str, torch.Tensor]:
    """Test samples of the data set a checkpoint names, when they load and fit."""
    if not spec:
        return {}
    try:
        images, _ = data.load(spec, "test").tensors()
    except ReliefError:
        return {}
    if list(images.shape[1:]) != list(shape[1:]):
        return {}
    return {f"{min(count, len(images))} test samples of {spec}": images[:count]}
