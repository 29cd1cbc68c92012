"""Regenerate every figure the README quotes, and splice them into it.

Each entry of FIGURES is one script; its output, the command, the date and the machine (CPU,
cores, load before and after, onnxruntime and torch versions) are written to
``docs/figures/NAME.md``, and the README's block between ``<!-- figures:NAME -->`` and
``<!-- /figures:NAME -->`` is replaced by that file. The README holds no other measured number,
so nothing it quotes can drift from the code. Run on an otherwise idle machine (the timings
are ratios measured interleaved, but a busy machine still adds noise).

Usage: .venv/bin/python tools/figures.py [NAME ...]     (all by default; about 30 minutes)
       .venv/bin/python tools/figures.py --readme-only  (splice the existing docs/figures/*.md)
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from relief_export.bench.machine import describe, machine_info

ROOT = Path(__file__).resolve().parent.parent
FIGURES_DIR = ROOT / "docs" / "figures"
WORK = ROOT / "build" / "figures"
PYTHON = sys.executable
DEMO = WORK / "demo"
# name -> command (run from the repository root); the demo comes first: later entries read its
# NNrelief checkpoints
FIGURES: dict[str, list[str]] = {
    "demo": [PYTHON, "-m", "relief_export", "demo", "--out", str(DEMO)],
    "lenet": [PYTHON, "tools/reproduce_lenet.py", "--out", "docs/lenet300_100"],
    "suite": [PYTHON, "tools/bench_suite.py", "--checkpoints", str(DEMO)],
    "int8": [PYTHON, "tools/bench_int8.py", "--checkpoints", str(DEMO)],
    "export": [PYTHON, "tools/bench_export.py", "--lenet", str(DEMO / "lenet300_100.pt")],
    "compact": [PYTHON, "tools/bench_compact.py"],
    "torch_pruning": [PYTHON, "tools/compare_torch_pruning.py"],
    "families": [PYTHON, "tools/families.py"],
    "scoring": [PYTHON, "tools/bench_scoring.py"],
    "distributed": [PYTHON, "tools/bench_distributed.py"],
    "fuzz": [PYTHON, "tools/fuzz.py"],
    "cover": [PYTHON, "tools/bench_cover.py"],
    "sparse": [PYTHON, "tools/bench_sparse.py", "--int8", "--layers"],
    "blocks": [PYTHON, "tools/bench_blocks.py"],
    "sparse_zoo": [PYTHON, "tools/bench_sparse.py", "--models", "all", "--masks",
                   "NNrelief-like", "--runs", "2"],
    "sparse_families": [PYTHON, "tools/bench_sparse.py", "--families", "--runs", "2"],
    "small_blocks": [PYTHON, "tools/bench_small_blocks.py"],
    "sparse_blocked": [PYTHON, "tools/bench_sparse.py", "--masks", "blocked NNrelief-like",
                       "--int8"],
}
DEMO_PICTURES = ("accuracy_vs_weights.png", "latency.png", "lenet300_100_before_after.png")
BLOCK = re.compile(r"(<!-- figures:(?P<name>\w+) -->\n).*?(<!-- /figures:(?P=name) -->)",
                   re.S)


def run(name: str) -> Path:
    """Run one script and write docs/figures/NAME.md."""
    command = FIGURES[name]
    before = machine_info()
    start = time.perf_counter()
    print(f"== {name}: {' '.join(command)}", flush=True)
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "RELIEF_EXPORT_PROGRESS_SECONDS": "1e9"})
    if result.returncode != 0:
        sys.stderr.write(result.stderr[-4000:])
        raise SystemExit(f"{name}: the script failed (exit {result.returncode})")
    after = machine_info()
    output = _extract(name, result.stdout)
    shown = " ".join(Path(part).name if part == PYTHON else
                     os.path.relpath(part, ROOT) if part.startswith(str(ROOT)) else part
                     for part in command)
    text = "\n".join([
        f"Produced by `.venv/bin/python tools/figures.py {name}` (runs `{shown}`, "
        f"{time.perf_counter() - start:.0f} s) on "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC.",
        f"Machine: {describe(before)}; load {after['load_1min']:.2f} after.", "",
        *(["```", output.rstrip(), "```"] if "```" not in output else [output.rstrip()]),
        ""])
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    target = FIGURES_DIR / f"{name}.md"
    target.write_text(text)
    if name == "demo":
        for picture in DEMO_PICTURES:
            shutil.copyfile(DEMO / picture, ROOT / "docs" / "demo" / picture)
    return target


def _extract(name: str, stdout: str) -> str:
    """What the README shows of a script's output: the demo's headline section, or all."""
    if name != "demo":
        return stdout
    report = (DEMO / "report.md").read_text()
    match = re.search(r"## Headline\n(.*?)\n## ", report, re.S)
    return match.group(1).strip() if match else report


def splice_readme() -> list[str]:
    """Replace every README block by its docs/figures file; returns the names replaced."""
    readme = ROOT / "README.md"
    text = readme.read_text()
    replaced: list[str] = []

    def block(match: re.Match) -> str:
        source = FIGURES_DIR / f"{match.group('name')}.md"
        if not source.is_file():
            return match.group(0)
        replaced.append(match.group("name"))
        return match.group(1) + source.read_text() + match.group(3)

    readme.write_text(BLOCK.sub(block, text))
    return replaced


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", choices=[[], *FIGURES], metavar="NAME",
                        help=f"which figures: {', '.join(FIGURES)} (default: all)")
    parser.add_argument("--readme-only", action="store_true",
                        help="only splice the existing docs/figures/*.md into README.md")
    args = parser.parse_args()
    if not args.readme_only:
        for name in args.names or FIGURES:
            print(f"wrote {run(name)}", flush=True)
    print(f"README blocks updated: {', '.join(splice_readme()) or 'none'}")


if __name__ == "__main__":
    main()
