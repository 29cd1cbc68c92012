"""torch.export archives (``.pt2``), untrusted by default.

Before torch deserialises anything, the archive is inspected as the zip it is: every member
must match its CRC-32 and be on the allow-list below (JSON parts, raw tensor records, sample
inputs that load with ``weights_only=True``); the JSON configs must store every weight and
constant as raw tensor data (``use_pickle`` false), the graph must hold no guard source
(torch exec()s it) and call only ops of torch's own namespaces. Anything else is refused
with one line naming the member and why, unless the user trusts the file. The load itself
then runs under ``safe_torch.no_unpickling``.
"""

from __future__ import annotations

import json
import re
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch.export.pt2_archive import constants as layout

from ..errors import ReliefError, first_line
from ..quiet import quiet_libraries
from .capture import program_module
from .loaded import LoadedModel
from .safe_torch import (
    load_bytes_weights_only,
    no_unpickling,
    read_member,
    refused_global,
    verify_zip,
)

_NAME = r"[A-Za-z0-9_.-]+"
# member path below the archive root -> what it holds (every other member is refused)
ALLOWED_MEMBERS: dict[str, str] = {
    re.escape(layout.ARCHIVE_FORMAT_PATH): "format tag",
    re.escape(layout.ARCHIVE_VERSION_PATH): "format version",
    r"byteorder|\.data/version|\.data/serialization_id": "archive markers",
    re.escape(layout.MODELS_DIR) + _NAME + r"\.json": "graph (JSON)",
    re.escape(layout.WEIGHTS_DIR) + _NAME + r"_weights_config\.json": "weights index (JSON)",
    re.escape(layout.WEIGHTS_DIR + layout.WEIGHT_FILENAME_PREFIX) + r"\d+": "raw tensor",
    re.escape(layout.CONSTANTS_DIR) + _NAME + r"_constants_config\.json":
        "constants index (JSON)",
    re.escape(layout.CONSTANTS_DIR + layout.TENSOR_CONSTANT_FILENAME_PREFIX) + r"\d+":
        "raw tensor",
    re.escape(layout.SAMPLE_INPUTS_DIR) + _NAME + r"\.pt": "sample inputs (tensors only)",
    re.escape(layout.EXTRA_DIR) + r".+": "extra text",
}
# why members known to hold code or pickles are refused
REFUSED_MEMBERS: dict[str, str] = {
    re.escape(layout.AOTINDUCTOR_DIR): "compiled code (AOTInductor shared library)",
    re.escape(layout.CONSTANTS_DIR + layout.CUSTOM_OBJ_FILENAME_PREFIX):
        "a pickled TorchScript object",
    re.escape(layout.CONSTANTS_DIR + layout.OPAQUE_OBJ_FILENAME_PREFIX):
        "a pickled Python object",
    r"serialized_(state_dict|constants|example_inputs)\.pt":
        "pickled data (the legacy archive layout)",
    re.escape(layout.EXECUTORCH_DIR) + "|" + re.escape(layout.MTIA_DIR):
        "a compiled program for another runtime",
}
# op targets the graph may call: torch's own namespaces and Python's operator module
ALLOWED_TARGETS = ("torch.ops.aten.", "torch.ops.prims.", "torch.ops.higher_order.",
                   "_operator.", "torch.sym_", "torch._sym_", "math.")
TRUST_HINT = "pass --trust-pickle (trust=True) only if you trust the file"


def load_export_archive(path: Path, *, trust: bool) -> torch.export.ExportedProgram:
    """The ExportedProgram in ``path``; refused as described above unless ``trust``."""
    names = verify_zip(path)
    if not trust:
        check_untrusted(path, names)
    try:
        with tempfile.TemporaryDirectory() as folder, quiet_libraries():
            readable = _with_plain_containers(path, names, Path(folder))
            if trust:
                return torch.export.load(str(readable))
            with no_unpickling():
                return torch.export.load(str(readable))
    except ReliefError:
        raise
    except Exception as error:
        raise ReliefError(f"{path}: corrupt or unreadable torch.export archive "
                          f"({first_line(error)})") from None


def _with_plain_containers(path: Path, names: list[str], folder: Path) -> Path:
    """``path``, or a copy in ``folder`` whose input / output specs name only containers torch
    knows. A model returning a library's own output class (a Hugging Face ``ModelOutput``)
    records that class, and torch can read the archive only once the library is imported; the
    copy records it as the dict of the same keys it is (the file itself is never changed)."""
    graphs = [n for n in names if n[len(_root(path, names)):].startswith(layout.MODELS_DIR)
              and n.endswith(".json")]
    rewritten = {}
    for name in graphs:
        text = read_member(path, name).decode()
        graph = json.loads(text)
        if _plain_specs(graph):
            rewritten[name] = json.dumps(graph).encode()
    if not rewritten:
        return path
    copy = folder / path.name
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(copy, "w") as target:
        for info in source.infolist():
            target.writestr(info, rewritten.get(info.filename, source.read(info.filename)))
    return copy


def _plain_specs(tree: Any) -> bool:
    """Rewrite, in place, every serialised treespec node of an unknown type whose context is a
    list of keys into a dict; True if any was."""
    changed = False
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key in ("in_spec", "out_spec") and isinstance(value, str):
                spec = json.loads(value)
                if _plain_node(spec[1]):
                    tree[key] = json.dumps(spec)
                    changed = True
            else:
                changed |= _plain_specs(value)
    elif isinstance(tree, list):
        for value in tree:
            changed |= _plain_specs(value)
    return changed


def _plain_node(node: dict[str, Any]) -> bool:
    changed = False
    kind = node.get("type")
    if kind is not None and kind not in pytree.SERIALIZED_TYPE_TO_PYTHON_TYPE:
        keys = json.loads(node["context"]) if isinstance(node.get("context"), str) else None
        if isinstance(keys, list) and all(isinstance(k, str) for k in keys):
            node["type"] = "builtins.dict"
            changed = True
    for child in node.get("children_spec", []):
        changed |= _plain_node(child)
    return changed


def check_untrusted(path: Path, names: list[str]) -> None:
    """Raise unless every member and JSON part is on the allow-list."""
    for name in names:
        _refuse_known(path, name)
    root = _root(path, names)
    for name in names:
        _check_member(path, name, name[len(root):])
    for name in names:
        relative = name[len(root):]
        if relative.endswith("_config.json"):
            _check_payload_config(path, name, names, root)
        elif relative.startswith(layout.MODELS_DIR):
            _check_graph(path, name)
        elif relative.startswith(layout.SAMPLE_INPUTS_DIR):
            _check_sample_inputs(path, name)


def _root(path: Path, names: list[str]) -> str:
    roots = {name.split("/", 1)[0] + "/" for name in names}
    if len(roots) != 1 or any("/" not in name for name in names):
        raise ReliefError(f"{path}: not a torch.export archive (members are not under one "
                          "root folder)")
    return roots.pop()


def _refuse_known(path: Path, name: str) -> None:
    for pattern, why in REFUSED_MEMBERS.items():
        if re.search(pattern, name):
            raise ReliefError(f"{path}: member {name} holds {why}; refused because loading it "
                              f"runs code from the file ({TRUST_HINT})")


def _check_member(path: Path, name: str, relative: str) -> None:
    if not any(re.fullmatch(pattern, relative) for pattern in ALLOWED_MEMBERS):
        raise ReliefError(f"{path}: member {name} is not a part of a torch.export archive "
                          f"that can be read without running code ({TRUST_HINT})")


def _json_member(path: Path, name: str) -> Any:
    try:
        return json.loads(read_member(path, name))
    except ReliefError:
        raise
    except (ValueError, UnicodeDecodeError) as error:
        raise ReliefError(f"{path}: corrupt archive: member {name} is not valid JSON "
                          f"({first_line(error)})") from None


def _check_payload_config(path: Path, name: str, names: list[str], root: str) -> None:
    config = _json_member(path, name)
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise ReliefError(f"{path}: corrupt archive: {name} has no 'config' table")
    folder = name.rsplit("/", 1)[0] + "/"
    for key, entry in entries.items():
        if not isinstance(entry, dict):
            raise ReliefError(f"{path}: corrupt archive: {name} entry {key!r} is not a table")
        if entry.get("use_pickle"):
            raise ReliefError(f"{path}: {key!r} is stored as a pickle ({name}); refused "
                              f"because unpickling runs code from the file ({TRUST_HINT})")
        stored = folder + str(entry.get("path_name"))
        if stored not in names or not isinstance(entry.get("tensor_meta"), dict):
            raise ReliefError(f"{path}: corrupt archive: {key!r} points to {stored}, which is "
                              "missing or has no tensor description")


def _check_graph(path: Path, name: str) -> None:
    program = _json_member(path, name)
    if not isinstance(program, dict):
        raise ReliefError(f"{path}: corrupt archive: {name} is not a program")
    if program.get("guards_code"):
        raise ReliefError(f"{path}: {name} holds guard source code, which torch would "
                          f"execute; refused ({TRUST_HINT})")
    for target in _targets(program):
        if not isinstance(target, str) or not target.startswith(ALLOWED_TARGETS):
            raise ReliefError(f"{path}: the graph calls {target!r}, which is not an op of "
                              f"torch's own namespaces; custom ops may run code ({TRUST_HINT})")


def _targets(tree: Any) -> Iterator[Any]:
    """Every node target in a serialised graph, subgraphs included."""
    if isinstance(tree, dict):
        if "target" in tree and "inputs" in tree and "outputs" in tree:
            yield tree["target"]
        for value in tree.values():
            yield from _targets(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _targets(value)


def _check_sample_inputs(path: Path, name: str) -> None:
    data = read_member(path, name)
    if not data:
        return
    try:
        load_bytes_weights_only(data)
    except Exception as error:
        found = refused_global(error)
        if found is None:
            raise ReliefError(f"{path}: corrupt archive: member {name} (sample inputs) is not "
                              f"a readable torch file ({first_line(error)})") from None
        raise ReliefError(f"{path}: member {name} (sample inputs) holds pickled Python "
                          f"objects ({found}); refused because unpickling runs code from the "
                          f"file ({TRUST_HINT})") from None


def read_export_archive(source: Path, trust: bool) -> LoadedModel:
    program = load_export_archive(source, trust=trust)
    placeholders = [node for node in program.graph.nodes if node.op == "placeholder"
                    and node.name in program.graph_signature.user_inputs]
    values = [node.meta.get("val") for node in placeholders]
    shape, examples = None, None
    if not all(isinstance(v, torch.Tensor) for v in values):
        raise ReliefError(f"{source}: the program's inputs are not all tensors; export a "
                          "wrapper whose forward takes tensors only")
    if len(values) == 1 and values[0].is_floating_point():
        shape = _concrete(values[0].shape)
    else:
        examples = _recorded_examples(program, values)
    module = program_module(program, str(source))
    return LoadedModel(module, source, "torch.export", shape, example_inputs=examples)


def _concrete(shape: Any) -> list[int]:
    """Symbolic sizes (a dynamic batch axis) become 1."""
    return [int(d) if isinstance(d, int) else 1 for d in shape]


def _recorded_examples(program: torch.export.ExportedProgram, values: list[Any]
                       ) -> tuple[torch.Tensor, ...]:
    """The example inputs saved in the archive when they fit the graph's inputs, else seeded
    ones of its shapes: U(0, 1) for floats, zeros for integers (index 0 exists in every
    embedding table)."""
    recorded = program.example_inputs
    if recorded is not None:
        args, kwargs = recorded
        if not kwargs and len(args) == len(values) and all(
                isinstance(a, torch.Tensor) and a.dtype == v.dtype and a.dim() == v.dim()
                for a, v in zip(args, values, strict=True)):
            return tuple(a.detach().clone() for a in args)
    generator = torch.Generator().manual_seed(0)
    return tuple(torch.rand(_concrete(v.shape), generator=generator, dtype=v.dtype)
                 if v.is_floating_point() else torch.zeros(_concrete(v.shape), dtype=v.dtype)
                 for v in values)
