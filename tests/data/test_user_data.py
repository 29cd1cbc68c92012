"""Data the way people keep it: imagefolder, npz, csv and saved Hugging Face data sets, their
options, and their bad inputs (one clear error each)."""

import numpy as np
import pytest
import torch
from PIL import Image

from relief_export import data
from relief_export.data.spec import parse, with_options
from relief_export.errors import ReliefError


def _image(path, size=(6, 5), value=0, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(np.full(shape, value, np.uint8), mode).save(path)


def _folder(root, split_folders=True, per_class=3):
    for split in (("train", "test") if split_folders else ("",)):
        for label, value in enumerate((10, 200)):
            for i in range(per_class):
                _image(root / split / f"class{label}" / f"{i}.png", value=value + i)
    return root


def test_spec_options_round_trip_and_refusals():
    spec = with_options("imagefolder:photos", image_size=[32, 24], normalize=None)
    assert spec == "imagefolder:photos?image_size=32,24"
    assert parse(spec).options == {"image_size": "32,24"}
    with pytest.raises(ReliefError, match="already sets image_size"):
        with_options(spec, image_size=8)
    with pytest.raises(ReliefError, match="key=value"):
        parse("npz:x.npz?oops")
    with pytest.raises(ReliefError, match=r"npz does not take option\(s\) image_size"):
        data.load("npz:x.npz?image_size=3", "train")


def test_imagefolder_splits_labels_and_scaling(tmp_path):
    root = _folder(tmp_path / "photos")
    train, test = data.load(f"imagefolder:{root}", "train"), data.load(f"imagefolder:{root}",
                                                                         "test")
    assert (len(train), len(test), train.num_classes) == (6, 6, 2)
    images, labels = train.tensors()
    assert images.shape == (6, 3, 5, 6) and labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert images[0, 0, 0, 0].item() == pytest.approx(10 / 255)
    assert images[5, 2, 4, 5].item() == pytest.approx(202 / 255)


def test_imagefolder_without_split_folders_holds_out_a_fifth_per_class(tmp_path):
    root = _folder(tmp_path / "photos", split_folders=False, per_class=10)
    train, test = (data.load(f"imagefolder:{root}", s) for s in ("train", "test"))
    assert (len(train), len(test)) == (16, 4)
    assert test.labels.tolist() == [0, 0, 1, 1]
    assert set(test.images[:, 0, 0, 0].tolist()).isdisjoint(train.images[:, 0, 0, 0].tolist())


def test_imagefolder_resize_grayscale_and_dataset_normalisation(tmp_path):
    root = tmp_path / "gray"
    for label, value in enumerate((50, 150)):
        _image(root / f"c{label}" / "0.png", size=(4, 4), value=value, mode="L")
        _image(root / f"c{label}" / "1.png", size=(8, 6), value=value, mode="L")
    spec = f"imagefolder:{root}?image_size=3&normalize=dataset"
    images, _ = data.load(spec, "train").tensors()
    assert images.shape[1:] == (1, 3, 3)
    # the mean of 50 and 150 (over /255) is 100/255, the std 50/255 (unbiased: * sqrt(n/(n-1)))
    n = 4 * 9
    std = 50 / 255 * np.sqrt(n / (n - 1))
    expected = (50 / 255 - 100 / 255) / std
    values = sorted(set(round(v, 5) for v in images.flatten().tolist()))
    assert values[0] == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("damage, message", [
    ("empty", "class folder holds no image"),
    ("mixed", "differs from"),
    ("corrupt", "not a readable image"),
    ("one_class", "at least 2"),
    ("unseen", "have no training images"),
])
def test_imagefolder_bad_folders(tmp_path, damage, message):
    root = _folder(tmp_path / "photos")
    if damage == "empty":
        for path in (root / "train" / "class1").iterdir():
            path.unlink()
    elif damage == "mixed":
        _image(root / "train" / "class0" / "big.png", size=(9, 9))
    elif damage == "corrupt":
        (root / "train" / "class0" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    elif damage == "one_class":
        root = tmp_path / "single"
        _image(root / "only" / "0.png")
    elif damage == "unseen":
        _image(root / "test" / "class9" / "0.png")
    split = "test" if damage == "unseen" else "train"
    with pytest.raises(ReliefError, match=message):
        data.load(f"imagefolder:{root}", split)
    with pytest.raises(ReliefError, match="no such folder"):
        data.load(f"imagefolder:{tmp_path / 'missing'}", "train")


def test_npz_holdout_and_explicit_splits(tmp_path):
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    y = np.repeat([0, 1], 10)
    np.savez(tmp_path / "a.npz", x=x, y=y)
    train, test = (data.load(f"npz:{tmp_path / 'a.npz'}", s) for s in ("train", "test"))
    assert (len(train), len(test), train.num_classes) == (16, 4, 2)
    assert sorted(train.images[:, 0].tolist() + test.images[:, 0].tolist()) == x[:, 0].tolist()
    np.savez(tmp_path / "b.npz", x_train=x[:15], y_train=y[:15], x_test=x[15:],
             y_test=y[15:])
    test = data.load(f"npz:{tmp_path / 'b.npz'}", "test")
    assert test.images[:, 1].tolist() == [31.0, 33.0, 35.0, 37.0, 39.0]
    ids = np.array([[5, 1, 0], [7, 2, 0]] * 5, dtype=np.int32)
    np.savez(tmp_path / "tokens.npz", x_train=ids, y_train=np.zeros(10, np.int64),
             x_test=ids, y_test=np.full(10, 0.5, np.float32))
    tokens = data.load(f"npz:{tmp_path / 'tokens.npz'}", "train")
    assert tokens.images.dtype == torch.int64 and tokens[0][0].tolist() == [5, 1, 0]
    target = data.load(f"npz:{tmp_path / 'tokens.npz'}", "test")
    assert target.labels.dtype == torch.float32 and target.num_classes == 0


def test_npz_bad_files(tmp_path):
    path = tmp_path / "bad.npz"
    cases = [(dict(x=np.zeros((4, 2))), "needs arrays x and y"),
             (dict(x=np.zeros((4, 2)), y=np.zeros(3, np.int64)), "one label per sample"),
             (dict(x=np.zeros((4, 2)), y=np.array([0, -2, 1, 0])), "0..K-1"),
             (dict(x=np.full((4, 2), np.nan), y=np.zeros(4, np.int64)), "NaN"),
             (dict(x=np.array([{"a": 1}] * 4, dtype=object), y=np.zeros(4)), "not a readable")]
    for arrays, message in cases:
        np.savez(path, **arrays)
        with pytest.raises(ReliefError, match=message):
            data.load(f"npz:{path}", "train")
    path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ReliefError, match="not a readable .npz"):
        data.load(f"npz:{path}", "train")


def test_csv_header_label_column_and_values(tmp_path):
    path = tmp_path / "t.csv"
    rows = ["f1,label,f2"] + [f"{i},{i % 2},{i * 0.5}" for i in range(10)]
    path.write_text("\n".join(rows) + "\n")
    whole = torch.cat([data.load(f"csv:{path}", s).images for s in ("train", "test")])
    assert sorted(whole[:, 0].tolist()) == list(range(10))
    train = data.load(f"csv:{path}", "train")
    assert train.images.shape[1] == 2 and train.num_classes == 2
    pairs = zip(train.images[:, 0], train.labels, strict=True)
    assert all(float(y) == float(x) % 2 for x, y in pairs)
    no_header = tmp_path / "n.csv"
    no_header.write_text("\n".join(f"{i},0.{i}" for i in range(10)))
    targets = data.load(f"csv:{no_header}", "train")
    assert targets.labels.dtype == torch.float32 and targets.num_classes == 0
    by_index = data.load(f"csv:{path}?label_column=0", "train")
    assert by_index.num_classes == 10 and by_index.images.shape[1] == 2
    pairs = zip(by_index.images[:, 0], by_index.labels, strict=True)
    assert all(float(x) == float(y) % 2 for x, y in pairs)


@pytest.mark.parametrize("text, message", [
    ("a,label\n1,0\n2\n", "row 3 has 1 fields"),
    ("a,label\n1,x\n", "label 'x' is not a number"),
    ("a,label\n", "no data rows"),
    ("a,b\n1,0\n2,1\n", None),
])
def test_csv_bad_files(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    if message is None:
        with pytest.raises(ReliefError, match="no label column 'label'"):
            data.load(f"csv:{path}?label_column=label", "train")
        return
    with pytest.raises(ReliefError, match=message):
        data.load(f"csv:{path}", "train")


@pytest.fixture
def tokenizer_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "good", "bad", "film"]
    folder = tmp_path / "tokenizer"
    transformers.BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}).save_pretrained(
        folder)
    return folder


def test_hf_dataset_is_tokenized_with_the_saved_tokenizer(tmp_path, tokenizer_folder):
    datasets = pytest.importorskip("datasets")
    table = datasets.Dataset.from_dict({"review": ["good film", "bad film", "film"] * 4,
                                        "stars": [1, 0, 0] * 4})
    datasets.DatasetDict({"train": table, "test": table.select(range(3))}).save_to_disk(
        tmp_path / "reviews")
    spec = f"hf:{tmp_path / 'reviews'}?text_column=review&label_column=stars" \
           f"&tokenizer={tokenizer_folder}&max_length=5"
    test = data.load(spec, "test")
    ids, labels = test.tensors()
    # [CLS]=2 good=4 film=6 [SEP]=3 [PAD]=0
    assert ids.tolist()[0] == [2, 4, 6, 3, 0] and ids.dtype == torch.int64
    assert labels.tolist() == [1, 0, 0] and len(data.load(spec, "train")) == 12
    with pytest.raises(ReliefError, match="no column 'text'"):
        data.load(f"hf:{tmp_path / 'reviews'}?tokenizer={tokenizer_folder}", "train")
    with pytest.raises(ReliefError, match="--tokenizer DIR"):
        data.load(f"hf:{tmp_path / 'reviews'}?text_column=review&label_column=stars", "train")
    (tmp_path / "junk").mkdir()
    with pytest.raises(ReliefError, match="not a data set saved with save_to_disk"):
        data.load(f"hf:{tmp_path / 'junk'}", "train")
