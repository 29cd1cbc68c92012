"""Coverage of the channel interpreter, per architecture family and kind of mask.

For each family of relief_export.bench.families under each of its three masks: how the model
was captured (torch.fx or torch.export), how many units are dead (constant outputs) and how
many of those compaction removed, parameters before / after, the largest relative error of the
compacted model (torch) and of the exported file (onnxruntime) against the masked model, and
the seconds both took; then the operations left whole, with their reason. Hugging Face
families need ``transformers`` (skipped without it).

    .venv/bin/python tools/families.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

from relief_export.bench.families import FAMILIES, MASKS, available, measure
from relief_export.table import format_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    rows, left_whole = [], Counter()
    for name, family in FAMILIES.items():
        if not available(family):
            print(f"skipped {name}: needs {family.needs}")
            continue
        for mask in MASKS:
            row = measure(name, mask)
            rows.append(row)
            left_whole.update(_reason(note) for note in row["left whole"])
    print(format_table(
        ["family", "mask", "captured", "dead units removed", "parameters before -> after",
         "error torch", "error ORT", "seconds"],
        [[r["family"], r["mask"], r["captured"],
          f"{r['dead removed']} / {r['dead units']}",
          f"{r['parameters before']:,} -> {r['parameters after']:,}",
          f"{r['error torch']:.1e}", f"{r['error onnxruntime']:.1e}", f"{r['seconds']:.1f}"]
         for r in rows]))
    dead = sum(r["dead units"] for r in rows)
    removed = sum(r["dead removed"] for r in rows)
    print(f"\ndead units removed over all rows: {removed} / {dead}")
    print("\nleft whole (occurrences over all rows):")
    print(format_table(["operation and reason", "rows"],
                       [[why, count] for why, count in left_whole.most_common()]))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


def _reason(note: str) -> str:
    """The note without node names, so that repeats of one op and reason count together."""
    if note.startswith("kept whole"):
        return "LayerNorm / GroupNorm: the channels normalised together are kept"
    described = note.removeprefix("left uncompacted: unsupported ")
    op, _, why = described.partition(" (")
    return f"{op.split(' ', 1)[-1]}: {why.partition('): ')[2]}"


if __name__ == "__main__":
    main()
