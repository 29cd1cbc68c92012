"""``relief-export bench A.onnx [B.onnx ...]``: latency, size, MACs, accuracy; table/JSON/PNG."""

from __future__ import annotations

import argparse

from ..bench import benchmark
from ..files import check_writable


def bench_command(args: argparse.Namespace) -> int:
    for path in (args.json, args.plot):
        if path is not None:
            check_writable(path)
    report = benchmark(args.models, batch_sizes=tuple(args.batch), threads=tuple(args.threads),
                       warmup=args.warmup, repeats=args.repeats, data=args.data)
    print(report.table())
    if args.json:
        report.write_json(args.json)
        print(f"wrote {args.json}")
    if args.plot:
        report.plot(args.plot)
        print(f"wrote {args.plot}")
    return 0
