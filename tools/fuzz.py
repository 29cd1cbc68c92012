"""Fuzz every entry point with corrupted, crafted and malicious inputs.

    .venv/bin/python tools/fuzz.py [--sample] [--seed 0] [--show unexpected|all] [--work DIR]

Inputs: a masked checkpoint, a torch.export archive and an ONNX export of a zoo model,
corrupted (truncations, byte flips, zeroed blocks, appended garbage, damaged zip structure),
valid containers with wrong contents (every checkpoint field missing or of the wrong type,
masks of the wrong kind or shape, NaN / Inf weights, unknown architectures, huge or negative
shapes, ONNX graphs that load but cannot run) and pickles that create a marker file, in every
place a pickle can hide (checkpoint, state_dict, torch.export members, CIFAR batches, npz
object arrays), and users' data files that cannot serve (image folders with an empty class,
mixed sizes or a corrupt image, npz / csv files with missing, mismatched, NaN or non-number
columns, damaged saved data sets). Each
goes through the entry points that take it: the export, inspect, bench, prune and train
commands (in process, with file descriptors 1 and 2 captured) and load_model, export_onnx,
compact and benchmark. A case fails on a traceback, an exception other than ReliefError, an
output left behind by a failed run, a changed input or an executed payload. Prints

    N cases: A clear errors, B unexpected, C partial outputs, D inputs changed, E code executed

and exits 1 unless B, C, D and E are all 0. ``--sample`` runs every payload and crafted case
and a slice of the random corruptions (the test suite's fast set).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import io
import json
import os
import pickle
import random
import shutil
import struct
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch.nn.utils import prune

import relief_export as rx
from relief_export import models
from relief_export.cli import main as cli_main
from relief_export.errors import ReliefError
from relief_export.inputs import tensor_sha256

MARKER_NAME = "PWNED"
SENTINEL = b"an earlier output that a failed run must leave alone\n"
ZOO_ARCH = {"name": "lenet300_100", "kwargs": {}}
INPUT_SHAPE = [1, 1, 28, 28]


# ---------------------------------------------------------------------------- payloads

class MarkerPayload:
    """Unpickling this creates the marker file (``open(marker, "w")``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


class SampleInputsPayload:
    """Unpickles to valid sample inputs ``((zeros(shape), ...), {})``, creating the marker."""

    def __init__(self, marker: Path, shapes: list[list[int]]) -> None:
        self.source = (f"(open({str(marker)!r}, 'w').close(), (tuple(__import__('torch')"
                       f".zeros(s) for s in {shapes!r}), {{}}))[1]")

    def __reduce__(self) -> tuple[Any, ...]:
        return (eval, (self.source,))


def torch_bytes(obj: Any, **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, **kwargs)
    return buffer.getvalue()


def zip_members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {info.filename: archive.read(info.filename) for info in archive.infolist()}


def zip_pack(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def pt2_payload(base: bytes, route: str, marker: Path) -> bytes:
    """A torch.export archive whose loading by torch.export.load runs the payload."""
    files = zip_members(base)
    root = next(iter(files)).split("/")[0] + "/"
    evil = torch_bytes({"x": MarkerPayload(marker)})
    if route == "sample_inputs":
        name = root + "data/sample_inputs/model.pt"
        args, _ = torch.load(io.BytesIO(files[name]), weights_only=True)
        shapes = [list(a.shape) for a in args]
        files[name] = torch_bytes(SampleInputsPayload(marker, shapes))
    elif route == "use_pickle_weight":
        name = root + "data/weights/model_weights_config.json"
        config = json.loads(files[name])
        key = next(iter(config["config"]))
        config["config"][key]["use_pickle"] = True
        files[root + "data/weights/" + config["config"][key]["path_name"]] = evil
        files[name] = json.dumps(config).encode()
    elif route in ("use_pickle_constant", "opaque_object", "custom_object"):
        name = root + "data/constants/model_constants_config.json"
        config = json.loads(files[name])
        member = {"use_pickle_constant": "tensor_0", "opaque_object": "opaque_obj_0",
                  "custom_object": "custom_obj_0"}[route]
        config["config"]["evil"] = {"path_name": member, "is_param": False, "use_pickle": True,
                                    "tensor_meta": None}
        files[root + "data/constants/" + member] = \
            evil if route == "use_pickle_constant" else pickle.dumps(MarkerPayload(marker))
        files[name] = json.dumps(config).encode()
    elif route == "guards_code":
        name = root + "models/model.json"
        program = json.loads(files[name])
        program["guards_code"] = [f"open({str(marker)!r}, 'w') is not None"]
        files[name] = json.dumps(program).encode()
    elif route == "custom_op":
        name = root + "models/model.json"
        text = files[name].decode()
        files[name] = text.replace("torch.ops.aten.linear.default", "torch.ops.evil.run.default",
                                   1).encode()
    elif route == "aotinductor":
        files[root + "data/aotinductor/model/model.so"] = b"\x7fELF" + bytes(64)
    elif route == "legacy_layout":
        files = {"version": b"8.9", "serialized_exported_program.json": b"{}",
                 "serialized_state_dict.pt": evil, "serialized_constants.pt": evil,
                 "serialized_example_inputs.pt": evil}
    return zip_pack(files)


PT2_ROUTES = ("sample_inputs", "use_pickle_weight", "use_pickle_constant", "opaque_object",
              "custom_object", "guards_code", "custom_op", "aotinductor", "legacy_layout")


# ---------------------------------------------------------------------------- seeds

@dataclass
class Seeds:
    """Valid inputs that every corruption starts from."""

    folder: Path
    marker: Path
    checkpoint: bytes = b""
    payload: dict[str, Any] = field(default_factory=dict)
    pt2: bytes = b""
    onnx: bytes = b""
    cifar_batch: bytes = b""


def build_seeds(folder: Path) -> Seeds:
    seeds = Seeds(folder, folder / MARKER_NAME)
    torch.manual_seed(0)
    model = models.build("lenet300_100")
    prune.l1_unstructured(model[1], "weight", amount=0.9)
    prune.l1_unstructured(model[3], "weight", amount=0.8)
    path = rx.save_checkpoint(folder / "seed.pt", model, arch=ZOO_ARCH,
                              input_shape=INPUT_SHAPE, data="synthetic")
    seeds.checkpoint = path.read_bytes()
    seeds.payload = torch.load(io.BytesIO(seeds.checkpoint), weights_only=True)
    small = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 16), torch.nn.ReLU(),
                                torch.nn.Linear(16, 10)).eval()
    buffer = io.BytesIO()
    torch.export.save(torch.export.export(small, (torch.rand(2, 1, 28, 28),)), buffer)
    seeds.pt2 = buffer.getvalue()
    rx.export_onnx(path, folder / "seed.onnx")
    seeds.onnx = (folder / "seed.onnx").read_bytes()
    images = np.random.default_rng(0).integers(0, 255, (20, 3072), dtype=np.uint8)
    seeds.cifar_batch = pickle.dumps({b"data": images, b"labels": list(range(10)) * 2},
                                     protocol=2)
    return seeds


# ---------------------------------------------------------------------------- cases

@dataclass
class Case:
    """One input (files written into a fresh folder) and the entry point that reads it."""

    name: str
    files: dict[str, bytes]
    entry: str
    payload: bool = False
    options: list[str] = field(default_factory=list)


def corruptions(data: bytes, rng: random.Random, count: int) -> Iterator[tuple[str, bytes]]:
    """Truncations, byte flips, zeroed blocks, appended garbage and zip damage of ``data``."""
    size = len(data)
    for cut in (0, 1, 4, 22, 100, size // 2, size - 22, size - 1):
        yield f"truncated at {cut}", data[:max(cut, 0)]
    kinds = ["truncate", "flip", "flips", "zero", "append", "prefix"]
    if data[:2] == b"PK":
        kinds += ["zip directory", "zip method", "zip name", "zip sizes", "zip encrypted"]
    for index in range(count):
        kind = kinds[index % len(kinds)]
        yield f"{kind} #{index}", _corrupt(data, kind, rng)


def _corrupt(data: bytes, kind: str, rng: random.Random) -> bytes:
    blob = bytearray(data)
    if kind == "truncate":
        return bytes(blob[:rng.randrange(len(blob))])
    if kind in ("flip", "flips"):
        for _ in range(1 if kind == "flip" else rng.randint(2, 16)):
            blob[rng.randrange(len(blob))] ^= 1 << rng.randrange(8)
        return bytes(blob)
    if kind == "zero":
        start = rng.randrange(len(blob))
        length = rng.choice((8, 64, 512, 4096))
        blob[start:start + length] = bytes(len(blob[start:start + length]))
        return bytes(blob)
    if kind == "append":
        return bytes(blob) + rng.randbytes(rng.choice((1, 16, 1000)))
    if kind == "prefix":
        return rng.randbytes(rng.choice((1, 16, 1000))) + bytes(blob)
    return _damage_zip(blob, kind, rng)


def _damage_zip(blob: bytearray, kind: str, rng: random.Random) -> bytes:
    """Edit one central-directory record of a zip (signature PK\\x01\\x02)."""
    records = [i for i in range(len(blob) - 46) if blob[i:i + 4] == b"PK\x01\x02"]
    if not records:
        return bytes(blob)
    at = rng.choice(records)
    if kind == "zip directory":
        for _ in range(4):
            blob[at + rng.randrange(46)] = rng.randrange(256)
    elif kind == "zip method":
        struct.pack_into("<H", blob, at + 10, rng.choice((1, 12, 14, 99)))
    elif kind == "zip name":
        name_length = struct.unpack_from("<H", blob, at + 28)[0]
        struct.pack_into("<H", blob, at + 8, struct.unpack_from("<H", blob, at + 8)[0] | 0x800)
        if name_length:
            blob[at + 46 + rng.randrange(name_length)] = rng.choice((0xff, 0xc3, 0x80, 0x00))
    elif kind == "zip sizes":
        struct.pack_into("<I", blob, at + 24, rng.choice((0, 1, 2**31, 2**32 - 1)))
    elif kind == "zip encrypted":
        struct.pack_into("<H", blob, at + 8, struct.unpack_from("<H", blob, at + 8)[0] | 0x1)
    return bytes(blob)


def _with_checksums(payload: dict[str, Any]) -> dict[str, Any]:
    """Recompute checksums where the tables are tensors, so field checks are what fails."""
    out = dict(payload)
    tables = {}
    for name in ("state_dict", "masks"):
        table = out.get(name)
        if isinstance(table, dict) and all(isinstance(v, torch.Tensor) and v.layout == torch.strided
                                           and v.device.type == "cpu" for v in table.values()):
            tables[name] = {k: tensor_sha256(v) for k, v in table.items()}
    if "checksums" in out and len(tables) == 2:
        out["checksums"] = tables
    return out


def payload_edits(seed: dict[str, Any], marker: Path) -> Iterator[tuple[str, dict[str, Any], bool]]:
    """(name, edited checkpoint dict, holds a payload) for every field and wrong value."""
    weight = seed["state_dict"]["1.weight"]
    mask = seed["masks"]["1.weight"]
    for key in list(seed):
        yield f"without {key}", {k: v for k, v in seed.items() if k != key}, False
    wrong: dict[str, list[Any]] = {
        "format": [None, 5, "other.format"],
        "version": [None, "2", 3, True, 2.0],
        "arch": [None, "lenet300_100", {"name": 5}, {"name": "alexnet", "kwargs": {}},
                 {"name": "lenet300_100", "kwargs": {"num_classes": 10**12}},
                 {"name": "lenet300_100", "kwargs": {"in_channels": -3}},
                 {"name": "lenet300_100", "kwargs": {"num_classes": 2.5}},
                 {"name": "lenet300_100", "kwargs": {"bogus": 1}},
                 {"name": "lenet300_100", "kwargs": "x"},
                 {"factory": "os:system", "kwargs": {"command": f"touch {marker}"}},
                 {"factory": "not a factory", "kwargs": {}}],
        "state_dict": [None, [], {1: weight}, {"1.weight": "text"},
                       {**seed["state_dict"], "1.weight": weight.to_sparse()},
                       {**seed["state_dict"], "1.weight": torch.empty(weight.shape,
                                                                       device="meta")},
                       {**seed["state_dict"], "1.weight": weight.clone().fill_(float("nan"))},
                       {**seed["state_dict"], "1.weight": weight.clone().fill_(float("inf"))},
                       {**seed["state_dict"], "1.weight": weight[:10]},
                       {k: v for k, v in seed["state_dict"].items() if k != "3.bias"},
                       {**seed["state_dict"], "extra.weight": weight},
                       {**seed["state_dict"], "1.weight": weight.int()}],
        "masks": [None, (mask,), "mask", {"1.weight": mask.to_sparse()},
                  {"1.weight": torch.empty(mask.shape, dtype=torch.bool, device="meta")},
                  {"1.weight": mask[:5]}, {"1.weight": mask.float()},
                  {"nothing.weight": mask}, {"1.weight": None}],
        "checksums": [None, {}, {"state_dict": {}, "masks": {}},
                      {"state_dict": {k: "0" * 64 for k in seed["state_dict"]},
                       "masks": {k: "0" * 64 for k in seed["masks"]}}],
        "input_shape": [1000000000, [1000000000, 1, 28, 28], [-1, 1, 28, 28], "1,1,28,28",
                        [1, 1, 28], [], [1.5, 1, 28, 28], [1] * 20, [1, 1, 100000, 100000]],
        "data": [5, "synthetic:100000,1000,1000,10", "imagenet", "mnist:/nonexistent"],
        "metrics": [[], {"test_accuracy": "x"}, {1: 2}, {"init_seed": "zero"}],
        "history": [{}, [1, 2], [{"remaining_weights": "x"}], "history"],
    }
    for key, values in wrong.items():
        for index, value in enumerate(values):
            yield f"{key} = wrong value #{index}", _with_checksums({**seed, key: value}), False
    hiding = {"state_dict": {**seed["state_dict"], "1.bias": MarkerPayload(marker)},
              "masks": {"1.weight": MarkerPayload(marker)},
              "metrics": {"test_accuracy": MarkerPayload(marker)},
              "history": [MarkerPayload(marker)],
              "arch": {"name": "lenet300_100", "kwargs": {"x": MarkerPayload(marker)}}}
    for key, value in hiding.items():
        yield f"payload in {key}", {**seed, key: value}, True


def checkpoint_cases(seeds: Seeds, rng: random.Random, count: int) -> Iterator[Case]:
    entries = ("load_model", "cli_inspect", "cli_export", "api_export", "cli_prune")
    for index, (name, data) in enumerate(corruptions(seeds.checkpoint, rng, count)):
        yield Case(f"checkpoint {name}", {"model.pt": data}, entries[index % len(entries)])
    for name, edited, evil in payload_edits(seeds.payload, seeds.marker):
        data = torch_bytes(edited)
        for entry in (entries if evil else entries[:4]):
            yield Case(f"checkpoint {name}", {"model.pt": data}, entry, evil)
    whole = {"whole file": torch_bytes(MarkerPayload(seeds.marker)),
             "plain state_dict": torch_bytes({**seeds.payload["state_dict"],
                                              "x": MarkerPayload(seeds.marker)}),
             "legacy torch format": torch_bytes({"x": MarkerPayload(seeds.marker)},
                                                _use_new_zipfile_serialization=False),
             "whole nn.Module": torch_bytes(models.build("lenet300_100"))}
    for name, data in whole.items():
        for entry in entries:
            yield Case(f"pickle: {name}", {"model.pt": data}, entry, True)


def pt2_cases(seeds: Seeds, rng: random.Random, count: int) -> Iterator[Case]:
    entries = ("load_model", "cli_inspect", "cli_export", "api_export", "cli_prune")
    for index, (name, data) in enumerate(corruptions(seeds.pt2, rng, count)):
        yield Case(f"pt2 {name}", {"model.pt2": data}, entries[index % len(entries)])
    for route in PT2_ROUTES:
        data = pt2_payload(seeds.pt2, route, seeds.marker)
        for entry in entries:
            yield Case(f"pt2 payload: {route}", {"model.pt2": data}, entry, True)
            yield Case(f"pt2 payload: {route} as .pt", {"model.pt": data}, entry, True)


def onnx_cases(seeds: Seeds, rng: random.Random, count: int) -> Iterator[Case]:
    entries = ("cli_bench", "api_benchmark", "cli_inspect", "cli_export")
    for index, (name, data) in enumerate(corruptions(seeds.onnx, rng, count)):
        yield Case(f"onnx {name}", {"model.onnx": data}, entries[index % len(entries)])
    for name, data in broken_onnx(seeds.onnx).items():
        for entry in entries:
            yield Case(f"onnx {name}", {"model.onnx": data}, entry)


def broken_onnx(seed: bytes) -> dict[str, bytes]:
    """Valid ONNX files that cannot be benchmarked or trusted as they are."""
    model = onnx.load_model_from_string(seed)
    cases: dict[str, onnx.ModelProto] = {}
    no_outputs = copy.deepcopy(model)
    del no_outputs.graph.output[:]
    cases["without outputs"] = no_outputs
    static = copy.deepcopy(model)
    static.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 3
    cases["with a static batch of 3"] = static
    unknown = copy.deepcopy(model)
    unknown.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "height"
    cases["without a sample shape"] = unknown
    integer = copy.deepcopy(model)
    integer.graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.INT64
    cases["with an int64 input"] = integer
    changed = copy.deepcopy(model)
    first = changed.graph.initializer[0]
    array = numpy_helper.to_array(first).copy()
    array.flat[0] = array.flat[0] + 1 if array.dtype.kind in "fiu" else array.flat[0]
    first.CopyFrom(numpy_helper.from_array(array, first.name))
    cases["with weights edited after export"] = changed
    reshape = helper.make_model(helper.make_graph(
        [helper.make_node("Reshape", ["input", "shape"], ["output"])], "bad",
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([7, 7, 7], np.int64), "shape")]),
        opset_imports=[helper.make_opsetid("", 17)])
    reshape.ir_version = 8
    cases["whose Reshape fails"] = reshape
    return {name: m.SerializeToString() for name, m in cases.items()}


def cifar_cases(seeds: Seeds) -> Iterator[Case]:
    evil = pickle.dumps(MarkerPayload(seeds.marker), protocol=2)
    for name, batch in (("payload", evil), ("truncated", seeds.cifar_batch[:100]),
                        ("not a dict", pickle.dumps([1, 2], protocol=2))):
        files = {f"cifar/data_batch_{i}": seeds.cifar_batch for i in range(1, 6)}
        files["cifar/test_batch"] = seeds.cifar_batch
        files["cifar/data_batch_1"] = batch
        for entry in ("cli_train", "data_load"):
            yield Case(f"cifar batch {name}", files, entry, name == "payload")


def png(size: tuple[int, int], value: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, (value, value, value)).save(buffer, format="PNG")
    return buffer.getvalue()


def npz(**arrays: Any) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def image_folder(sizes: dict[str, list[tuple[int, int]]]) -> dict[str, bytes]:
    return {f"images/{label}/{i}.png": png(size, 40 * i) for label, group in sizes.items()
            for i, size in enumerate(group)}


def user_data_files(marker: Path) -> dict[str, tuple[str, dict[str, bytes], bool]]:
    """Bad files in the ways people keep data: name -> (spec, files, holds a payload)."""
    good = image_folder({"cat": [(8, 8)] * 3, "dog": [(8, 8)] * 3})
    x, y = np.random.default_rng(0).random((6, 4), dtype=np.float32), np.arange(6) % 2
    evil = np.array([MarkerPayload(marker)], dtype=object)
    cases: dict[str, tuple[str, dict[str, bytes], bool]] = {
        "imagefolder empty class": ("imagefolder:{folder}/images",
                                    {**good, "images/emu/readme.txt": b"no images"}, False),
        "imagefolder mixed sizes": ("imagefolder:{folder}/images",
                                    {**good, "images/dog/9.png": png((9, 7), 3)}, False),
        "imagefolder corrupt image": ("imagefolder:{folder}/images",
                                      {**good, "images/cat/0.png": good["images/cat/0.png"][:40]},
                                      False),
        "imagefolder one class": ("imagefolder:{folder}/images",
                                  image_folder({"cat": [(8, 8)] * 3}), False),
        "imagefolder missing": ("imagefolder:{folder}/nothing", {}, False),
        "imagefolder bad option": ("imagefolder:{folder}/images?image_size=-3", good, False),
        "npz missing y": ("npz:{folder}/d.npz", {"d.npz": npz(x=x)}, False),
        "npz lengths differ": ("npz:{folder}/d.npz", {"d.npz": npz(x=x, y=y[:4])}, False),
        "npz NaN": ("npz:{folder}/d.npz", {"d.npz": npz(x=np.full_like(x, np.nan), y=y)}, False),
        "npz negative labels": ("npz:{folder}/d.npz", {"d.npz": npz(x=x, y=-y - 1)}, False),
        "npz pickled objects": ("npz:{folder}/d.npz", {"d.npz": npz(x=evil, y=y[:1])}, True),
        "npz truncated": ("npz:{folder}/d.npz", {"d.npz": npz(x=x, y=y)[:100]}, False),
        "npz not a zip": ("npz:{folder}/d.npz", {"d.npz": b"x,y\n1,2\n"}, False),
        "csv ragged": ("csv:{folder}/d.csv", {"d.csv": b"a,b,label\n1,2,0\n3,1\n"}, False),
        "csv words": ("csv:{folder}/d.csv", {"d.csv": b"a,b,label\n1,x,0\n3,1,1\n"}, False),
        "csv header only": ("csv:{folder}/d.csv", {"d.csv": b"a,b,label\n"}, False),
        "csv no label column": ("csv:{folder}/d.csv?label_column=target",
                                {"d.csv": b"a,b,label\n1,2,0\n3,1,1\n"}, False),
        "csv binary": ("csv:{folder}/d.csv", {"d.csv": bytes(range(256))}, False),
        "hf not a dataset": ("hf:{folder}/ds", {"ds/dataset_info.json": b"{broken"}, False),
        "unknown kind": ("parquet:{folder}/d.parquet", {"d.parquet": b"PAR1"}, False),
    }
    return cases


def user_data_cases(seeds: Seeds) -> Iterator[Case]:
    for name, (spec, files, payload) in user_data_files(seeds.marker).items():
        for entry in ("user_data_load", "cli_train_user_data"):
            yield Case(f"data {name}", files, entry, payload, options=[spec])


# entry point, input, options that cannot be honoured ({folder}: the case's folder)
OPTION_CASES: list[tuple[str, str, list[str]]] = [
    ("cli_export", "checkpoint", ["--input-shape", "1000000000,1,28,28"]),
    ("cli_export", "checkpoint", ["--opset", "99"]),
    ("cli_export", "checkpoint", ["--opset", "16"]),
    ("cli_export", "checkpoint", ["--align", "0"]),
    ("cli_export", "checkpoint", ["--report", "{folder}/missing/r.json"]),
    ("cli_export", "checkpoint", ["--dense-out", "{folder}/model.pt"]),
    ("cli_export", "checkpoint", ["--out", "/proc/self/relief.onnx"]),
    ("cli_export", "checkpoint", ["--out", "{folder}"]),
    ("cli_bench", "onnx", ["--batch", "1000000000"]),
    ("cli_bench", "onnx", ["--json-out", "{folder}/model.onnx"]),
    ("cli_bench", "onnx", ["--plot", "{folder}/model.onnx"]),
    ("cli_prune", "checkpoint", ["--out", "{folder}/model.pt"]),
    ("cli_train_synthetic", "none", ["--device", "bogus"]),
    ("cli_train_synthetic", "none", ["--epochs", "-1"]),
]


def option_cases(seeds: Seeds) -> Iterator[Case]:
    inputs = {"checkpoint": {"model.pt": seeds.checkpoint}, "onnx": {"model.onnx": seeds.onnx},
              "none": {}}
    for entry, kind, options in OPTION_CASES:
        yield Case(f"{entry} {' '.join(options)}", inputs[kind], entry, options=options)


API_CASES: dict[str, Callable[[Path], Any]] = {
    "export_onnx(opset='18')": lambda f: rx.export_onnx(f / "model.pt", f / "out.onnx",
                                                        opset="18"),
    "export_onnx(align=2.5)": lambda f: rx.export_onnx(f / "model.pt", f / "out.onnx",
                                                       align=2.5),
    "export_onnx(weights=None)": lambda f: rx.export_onnx(f / "model.pt", f / "out.onnx",
                                                          weights=None),
    "export_onnx(model_or_path=5)": lambda f: rx.export_onnx(5, f / "out.onnx"),
    "export_onnx(example_inputs=nan)": lambda f: rx.export_onnx(
        f / "model.pt", f / "out.onnx", example_inputs=torch.full((1, 1, 28, 28), float("nan"))),
    "compact('model.pt', x)": lambda f: rx.compact(str(f / "model.pt"),
                                                   torch.rand(1, 1, 28, 28)),
    "compact(model, 'x')": lambda f: rx.compact(models.build("lenet300_100"), "x"),
    "compact(model, empty batch)": lambda f: rx.compact(models.build("lenet300_100"),
                                                        torch.rand(0, 1, 28, 28)),
    "benchmark(batch_sizes=(1.5,))": lambda f: rx.benchmark([f / "model.onnx"],
                                                            batch_sizes=(1.5,)),
    "benchmark(threads=(0,))": lambda f: rx.benchmark([f / "model.onnx"], threads=(0,)),
    "benchmark('model.onnx')": lambda f: rx.benchmark(str(f / "model.onnx")),
    "benchmark(repeats=-1)": lambda f: rx.benchmark([f / "model.onnx"], repeats=-1),
    "load_model(5)": lambda f: rx.load_model(5),
    "load_model(trust='yes')": lambda f: rx.load_model(f / "model.pt", trust="yes"),
    "relief_step('model.pt', x)": lambda f: rx.relief_step(str(f / "model.pt"),
                                                           torch.rand(2, 1, 28, 28)),
    "models.build(num_classes=0)": lambda f: models.build("lenet5", num_classes=0),
    "data.load(5, 'train')": lambda f: rx_data().load(5, "train"),
}


def rx_data() -> Any:
    from relief_export import data

    return data


def all_cases(seeds: Seeds, sample: bool, seed: int) -> list[Case]:
    rng = random.Random(seed)
    count = 24 if sample else 330
    cases = [*checkpoint_cases(seeds, rng, count), *pt2_cases(seeds, rng, count),
             *onnx_cases(seeds, rng, count), *cifar_cases(seeds), *option_cases(seeds),
             *user_data_cases(seeds)]
    files = {"model.pt": seeds.checkpoint, "model.onnx": seeds.onnx}
    cases += [Case(f"API {name}", files, name) for name in API_CASES]
    return cases


# ---------------------------------------------------------------------------- running

@dataclass
class Outcome:
    case: Case
    verdict: str  # "ok", "clear", "unexpected"
    detail: str = ""
    partial: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    executed: bool = False
    seconds: float = 0.0


@contextlib.contextmanager
def captured() -> Iterator[io.StringIO]:
    """stdout and stderr, Python's and the file descriptors' (C++ logging), into one text."""
    text = io.StringIO()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
                yield text
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            sink.seek(0)
            text.write(sink.read().decode(errors="replace"))


def run_entry(case: Case, folder: Path, out: Path) -> int | None:
    """Call the case's entry point; CLI entries return their exit code."""
    source = folder / next(iter(case.files), "")
    options = [o.replace("{folder}", str(folder)) for o in case.options]
    cli = {
        "cli_export": lambda: [str(source), "--out", str(out), *options],
        "cli_inspect": lambda: ["inspect", str(source)],
        "cli_prune": lambda: ["prune", str(source), "--data", "synthetic", "--iterations", "1",
                              "--epochs", "0", "--calib-samples", "32", "--out", str(out),
                              *options],
        "cli_bench": lambda: ["bench", str(source), "--batch", "2", "--repeats", "1",
                              "--warmup", "0", "--no-memory", "--json-out", str(out), *options],
        "cli_train": lambda: ["train", "--arch", "lenet5", "--data", f"cifar10:{folder}/cifar",
                              "--epochs", "1", "--out", str(out)],
        "cli_train_user_data": lambda: ["train", "--arch", "lenet300_100", "--data",
                                        options[0], "--epochs", "1", "--out", str(out)],
        "cli_train_synthetic": lambda: ["train", "--arch", "lenet300_100", "--data",
                                        "synthetic", "--epochs", "1", "--out", str(out),
                                        *options],
    }
    if case.entry in cli:
        if "--out" in options:
            args = cli[case.entry]()
            position = args.index("--out")
            args[position:position + 2] = []
            return cli_main(args)
        return cli_main(cli[case.entry]())
    api: dict[str, Callable[[], Any]] = {
        "load_model": lambda: rx.load_model(source),
        "api_export": lambda: rx.export_onnx(source, out),
        "api_benchmark": lambda: rx.benchmark([source], batch_sizes=(2,), repeats=1, warmup=0,
                                              progress=False, memory=False),
        "data_load": lambda: rx_data().load(f"cifar10:{folder}/cifar", "train"),
        "user_data_load": lambda: rx_data().load(options[0], "train"),
        **{name: (lambda call=call: call(folder)) for name, call in API_CASES.items()},
    }
    api[case.entry]()
    return None


def run_case(case: Case, work: Path, marker: Path, index: int) -> Outcome:
    folder = work / f"case{index}"
    folder.mkdir()
    for name, data in case.files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    out = folder / ("out.json" if "bench" in case.entry else
                    "out.pt" if case.entry in ("cli_prune", "cli_train", "cli_train_synthetic")
                    else "out.onnx")
    out.write_bytes(SENTINEL)
    before = _hashes(folder)
    start = time.perf_counter()
    with captured() as text:
        try:
            code = run_entry(case, folder, out)
            verdict, detail = _judge_exit(code, text.getvalue())
        except ReliefError as error:
            verdict, detail = "clear", str(error)
        except SystemExit as error:  # argparse: usage and exit 2
            verdict = "clear" if error.code == 2 else "unexpected"
            detail = f"SystemExit({error.code})"
        except BaseException as error:
            verdict, detail = "unexpected", f"{type(error).__name__}: {error}"
    outcome = Outcome(case, verdict, detail.strip().splitlines()[0] if detail.strip() else "",
                      seconds=time.perf_counter() - start)
    _check_files(outcome, folder, before, out)
    outcome.executed = marker.exists()
    with contextlib.suppress(FileNotFoundError):
        marker.unlink()
    shutil.rmtree(folder, ignore_errors=True)
    return outcome


def _judge_exit(code: int | None, text: str) -> tuple[str, str]:
    if "Traceback" in text or "internal error" in text:
        return "unexpected", text.strip().splitlines()[-1] if text.strip() else "traceback"
    if code in (None, 0):
        return "ok", ""
    errors = [line for line in text.splitlines() if line.startswith("relief-export: error:")]
    if code in (1, 2) and len(errors) == 1:
        return "clear", errors[0]
    return "unexpected", f"exit {code}: {text.strip()[-300:]}"


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in folder.rglob("*") if p.is_file()}


def _check_files(outcome: Outcome, folder: Path, before: dict[str, str], out: Path) -> None:
    after = _hashes(folder)
    inputs = {name for name in before if name != out.name}
    outcome.changed = sorted(n for n in inputs if after.get(n) != before[n])
    new = sorted(set(after) - set(before))
    if outcome.verdict != "ok" and after.get(out.name) != before[out.name]:
        new.append(out.name)
    outcome.partial = [n for n in new if outcome.verdict != "ok" or n.endswith(".tmp")]


def summary(outcomes: list[Outcome]) -> str:
    count = {key: sum(1 for o in outcomes if o.verdict == key) for key in ("clear",
                                                                           "unexpected")}
    return (f"{len(outcomes)} cases: {count['clear']} clear errors, {count['unexpected']} "
            f"unexpected, {sum(1 for o in outcomes if o.partial)} partial outputs, "
            f"{sum(1 for o in outcomes if o.changed)} inputs changed, "
            f"{sum(1 for o in outcomes if o.executed)} code executed")


def failed(outcome: Outcome) -> bool:
    return outcome.verdict == "unexpected" or bool(outcome.partial or outcome.changed
                                                   or outcome.executed)


def fuzz(work: Path, *, sample: bool = False, seed: int = 0,
         show: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    seeds = build_seeds(work)
    outcomes = []
    for index, case in enumerate(all_cases(seeds, sample, seed)):
        outcome = run_case(case, work, seeds.marker, index)
        outcomes.append(outcome)
        if show is not None:
            show(outcome)
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", action="store_true", help="the test suite's fast set")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random corruptions")
    parser.add_argument("--show", choices=("failures", "all"), default="failures")
    parser.add_argument("--work", default=None, help="folder for the cases (default: temp)")
    args = parser.parse_args(argv)

    def show(outcome: Outcome) -> None:
        if args.show == "all" or failed(outcome):
            flags = [f for f, on in (("PARTIAL", outcome.partial), ("CHANGED", outcome.changed),
                                     ("EXECUTED", outcome.executed)) if on]
            print(f"{outcome.verdict:10s} {outcome.seconds:5.1f}s {outcome.case.entry:22s} "
                  f"{outcome.case.name}: {outcome.detail[:160]} {' '.join(flags)}", flush=True)

    with tempfile.TemporaryDirectory(dir=args.work) as folder:
        outcomes = fuzz(Path(folder), sample=args.sample, seed=args.seed, show=show)
    print(summary(outcomes))
    return 1 if any(failed(o) for o in outcomes) else 0


if __name__ == "__main__":
    raise SystemExit(main())
