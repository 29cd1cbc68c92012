"""``relief-export MODEL --out OUT.onnx``: the main command."""

from __future__ import annotations

import argparse

from ..pipeline import export_onnx, tensor_table
from .inspect import print_notes


def export_command(args: argparse.Namespace) -> int:
    report = export_onnx(args.model, args.out, input_shape=args.input_shape,
                         weights=args.weights, fp16_weights=args.fp16_weights,
                         opset=args.opset, align=args.align, dense_out=args.dense_out,
                         verify_outputs=not args.no_verify, trust=args.trust_pickle,
                         allow_factory=args.allow_factory, report_path=args.report)
    print_notes(report.notes)
    if args.verbose:
        print(tensor_table(report))
    print(report.summary())
    return 0
