"""``relief-export inspect MODEL``: per layer, shape, density, dead units, what compaction would
remove and the weight format export would choose; nothing is written."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from .. import validate
from ..compile.graph import unmasked_copy
from ..errors import ReliefError, first_line
from ..inputs import read_model
from ..inputs.safe_torch import ONNX, sniff
from ..onnx.integrity import check_integrity
from ..pipeline import export_onnx, tensor_table
from ..progress import is_quiet
from ..table import format_table
from ._options import source_options

LAYER_COLUMNS = ("layer", "shape", "density", "dead units", "unread inputs")


def inspect_command(args: argparse.Namespace) -> dict:
    """Per layer: shape, density, dead units, unread inputs; then what ``relief-export MODEL
    --out X.onnx`` with the same options would write (the export itself, run in a temporary
    folder and discarded), so both print the same counts and formats."""
    if Path(args.model).is_file() and sniff(Path(args.model)) == ONNX and not args.compact:
        return _inspect_onnx(Path(args.model))
    loaded = read_model(args.model, **source_options(args))
    print_notes(loaded.notes)
    shape = args.input_shape or loaded.input_shape
    if loaded.example_inputs and not args.input_shape:
        shape = [list(x.shape) for x in loaded.example_inputs]  # several inputs, as recorded
    elif not shape:
        raise ReliefError(f"{args.model}: the file records no input shape; pass --input-shape")
    else:
        shape = validate.shape("--input-shape", shape)
    plain = unmasked_copy(loaded.model)
    rows = [_layer_row(name, module) for name, module in plain.named_modules()
            if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d))]
    print(f"{loaded.source} ({loaded.kind}), input shape {shape}, sha256 {loaded.sha256}")
    if loaded.kind == "checkpoint" and not loaded.notes:
        print("integrity: every tensor matches its recorded sha256")
    if loaded.history:
        final = loaded.history[-1]
        print(f"NNrelief iterations: {len(loaded.history) - 1}, weights left "
              f"{100 * final.get('remaining_weights', float('nan')):.2f}%, test accuracy "
              f"{100 * final.get('test_accuracy', float('nan')):.2f}%")
    print(format_table(list(LAYER_COLUMNS), rows))
    with tempfile.TemporaryDirectory() as folder:
        report = export_onnx(args.model, Path(folder) / "model.onnx",
                             input_shape=args.input_shape,
                             weights=args.weights, align=args.align, verify_outputs=False,
                             **source_options(args))
    print(f"\nrelief-export MODEL --out X.onnx --align {args.align} --weights {args.weights} "
          "would write:")
    print(report.compaction_text)
    print(tensor_table(report))
    print(report.summary().replace("model.onnx", "X.onnx"))
    return {"source": str(loaded.source), "kind": loaded.kind, "input_shape": shape,
            "layers": [dict(zip(LAYER_COLUMNS, row, strict=True)) for row in rows],
            "export": report.to_dict()}


def _inspect_onnx(path: Path) -> dict:
    """An ONNX file: its metadata and whether its weights still match their recorded sha256;
    exit 2 when they do not."""
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as error:
        raise ReliefError(f"{path}: corrupt ONNX file ({first_line(error)})") from None
    check = check_integrity(model)
    props = {p.key: p.value for p in model.metadata_props
             if p.key not in ("weight_formats", "int8")}
    rows: list[list[Any]] = [["opset", ", ".join(f"{o.domain or 'ai.onnx'} {o.version}"
                                for o in model.opset_import)],
            ["nodes", len(model.graph.node)], ["initializers", len(model.graph.initializer)],
            *[[key, value] for key, value in props.items()],
            ["weights sha256 now", check.actual], ["integrity", check.status]]
    print(f"{path} (ONNX model)")
    print(format_table(["", ""], rows + _int8_rows(model)))
    if check.recorded and check.recorded != check.actual:
        raise ReliefError(f"{path}: corrupt: its weights do not match the sha256 recorded "
                          "when it was exported")
    return {"source": str(path), "kind": "onnx", **{str(k): v for k, v in rows}}


def _int8_rows(model: onnx.ModelProto) -> list[list[Any]]:
    """How an int8 export runs each layer, from the "int8" entry it records."""
    recorded = next((p.value for p in model.metadata_props if p.key == "int8"), None)
    if recorded is None:
        return []
    try:
        int8 = json.loads(recorded)
        rows = [["int8 calibration", int8["calibration"]], ["int8 choice", int8["chosen"]],
                ["layers in fp32", ", ".join(int8["fp32_layers"]) or "none"]]
        if int8["measured_int8"] is not None:
            rows.append(["faster in int8 alone", ", ".join(int8["measured_int8"]) or "none"])
    except (ValueError, KeyError, TypeError):
        return [["int8", "unreadable record"]]
    return rows


def print_notes(notes: list[str]) -> None:
    """Notes on stderr (``--quiet`` keeps only the warnings)."""
    for note in notes:
        if is_quiet() and not note.startswith("warning:"):
            continue
        print(note if note.startswith("warning:") else f"note: {note}", file=sys.stderr)


def _layer_row(name: str, module: nn.Module) -> list:
    weight = torch.as_tensor(module.weight).detach()
    rows = weight.flatten(1)
    dead = int((rows == 0).all(1).sum())
    unread = int((weight.flatten(2).eq(0).all(2) if weight.dim() > 2 else weight.eq(0))
                 .all(0).sum())
    return [name, "x".join(map(str, weight.shape)),
            f"{float((weight != 0).float().mean()):.4f}", dead, unread]
