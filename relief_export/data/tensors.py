"""An in-memory data set of samples and labels: images (uint8 or float), feature rows or token
ids, with class labels (int64), per-token labels or regression targets (float)."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, Subset


class ImageDataset(Dataset):
    """Samples N x ... : uint8 (scaled to [0, 1] on access), floats, or integer token ids (kept
    as int64). Labels: int64 classes (N, or N x L per token, -100 = ignored) or float targets.

    ``mean`` / ``std`` (per channel, axis 1), when given, normalise: x = (x / 255 - mean) / std.
    ``num_classes`` is 0 for regression targets.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int,
                 mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None):
        if images.ndim < 2 or len(images) != len(labels):
            raise ValueError(f"images {tuple(images.shape)} and labels {tuple(labels.shape)}")
        self.images = images
        self.labels = labels.float() if labels.is_floating_point() else labels.to(torch.int64)
        self.num_classes = num_classes
        spread = (-1,) + (1,) * (images.ndim - 2)
        self.mean = None if mean is None else torch.tensor(mean).view(spread)
        self.std = None if std is None else torch.tensor(std).view(spread)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._convert(self.images[index]), self.labels[index]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images (converted as by ``__getitem__``) and labels at once."""
        return self._convert(self.images), self.labels

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def subset(self, indices: torch.Tensor) -> ImageDataset:
        """The samples at ``indices`` as a data set of their own (same classes, scaling)."""
        chosen = ImageDataset(self.images[indices], self.labels[indices], self.num_classes)
        chosen.mean, chosen.std = self.mean, self.std
        return chosen

    def _convert(self, image: torch.Tensor) -> torch.Tensor:
        if not image.is_floating_point() and image.dtype != torch.uint8:
            return image.to(torch.int64)  # token ids
        x = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
        if self.mean is not None and self.std is not None:
            x = (x - self.mean) / self.std
        return x


def batches(dataset: Dataset, batch_size: int, *, shuffle: bool = False,
            generator: torch.Generator | None = None):
    """Yield (images, labels) batches; ImageDatasets (or Subsets of one) are sliced in bulk."""
    base, indices = _resolve(dataset)
    order = torch.randperm(len(indices), generator=generator) if shuffle else None
    for start in range(0, len(indices), batch_size):
        chosen = indices[start:start + batch_size] if order is None \
            else indices[order[start:start + batch_size]]
        if isinstance(base, ImageDataset):
            yield base._convert(base.images[chosen]), base.labels[chosen]
        else:
            items = [base[int(i)] for i in chosen]
            yield torch.stack([x for x, _ in items]), torch.as_tensor([y for _, y in items])


def _resolve(dataset: Dataset) -> tuple[Dataset, torch.Tensor]:
    """The underlying data set and the index tensor selecting ``dataset``'s items from it."""
    if isinstance(dataset, Subset):
        base, inner = _resolve(dataset.dataset)
        return base, inner[torch.as_tensor(list(dataset.indices), dtype=torch.int64)]
    return dataset, torch.arange(len(dataset))  # type: ignore[arg-type]
