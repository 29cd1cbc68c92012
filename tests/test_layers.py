"""The import graph of the package: no cycles, and the layering the design asks for
(pipeline on top; the stages see only modules and files)."""

import ast
from pathlib import Path

import relief_export

PACKAGE = Path(relief_export.__file__).parent


def module_name(path: Path) -> str:
    parts = ["relief_export", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """relief_export modules ``path`` imports (TYPE_CHECKING-only imports excluded)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    skipped = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
               and "TYPE_CHECKING" in ast.unparse(block.test) for node in ast.walk(block)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("relief_export")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            if base.startswith("relief_export"):
                found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                          for a in node.names}
    return {m for m in found if m in MODULES and m != name}


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
GRAPH = {name: imports(path) for name, path in MODULES.items()}


def test_the_import_graph_has_no_cycle():
    state: dict[str, str] = {}

    def visit(node, trail):
        state[node] = "open"
        for target in sorted(GRAPH[node]):
            assert state.get(target) != "open", " -> ".join([*trail, node, target])
            if target not in state:
                visit(target, [*trail, node])
        state[node] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [])


def reaches(source_prefix: str, target_prefix: str) -> list[str]:
    return sorted(f"{m} -> {t}" for m, targets in GRAPH.items() if m.startswith(source_prefix)
                  for t in targets if t.startswith(target_prefix))


def test_the_stages_see_only_modules_and_files():
    assert reaches("relief_export.onnx", "relief_export.inputs") == []
    assert reaches("relief_export.onnx", "relief_export.compile") == []
    assert reaches("relief_export.onnx", "relief_export.pipeline") == []
    assert reaches("relief_export.bench", "relief_export.prune") == []
    assert reaches("relief_export.bench", "relief_export.onnx") == []
    assert reaches("relief_export.prune", "relief_export.compile") == []
    assert reaches("relief_export.compile", "relief_export.prune") == []
    assert reaches("relief_export.commands", "relief_export.cli") == []
    assert reaches("relief_export.onnx", "relief_export._version") == []
    for stage in ("inputs", "channels", "compile", "prune", "onnx", "int8", "bench"):
        for above in ("pipeline", "commands", "cli"):
            assert reaches(f"relief_export.{stage}", f"relief_export.{above}") == []


def test_the_inputs_read_files_and_build_nothing_else():
    for stage in ("channels", "compile", "prune", "int8", "bench"):
        assert reaches("relief_export.inputs", f"relief_export.{stage}") == []
    # of the ONNX stage, only our files' weights checksum (a fact of the file format)
    assert reaches("relief_export.inputs", "relief_export.onnx") == [
        "relief_export.inputs.onnx_graph -> relief_export.onnx.integrity"]


def test_graph_utilities_and_the_channel_table_sit_below_the_stages():
    for stage in ("inputs", "channels", "compile", "prune", "onnx", "int8", "bench",
                  "pipeline", "commands"):
        assert reaches("relief_export.graph", f"relief_export.{stage}") == []
        assert reaches("relief_export.runtime", f"relief_export.{stage}") == []
    for stage in ("inputs", "compile", "prune", "onnx", "int8", "bench"):
        assert reaches("relief_export.channels", f"relief_export.{stage}") == []


def test_the_layout_targets():
    """Few modules at the root, none over 400 lines, op families under 250."""
    root = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert len(root) <= 12, root
    lines = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert {name: n for name, n in lines.items() if n > 400} == {}
    families = {name: n for name, n in lines.items()
                if name.startswith("relief_export.channels.ops.")}
    assert len(families) >= 8
    assert {name: n for name, n in families.items() if n >= 250} == {}


def test_the_walk_sees_real_edges():
    """A walker that found nothing would pass every test above."""
    assert "relief_export.onnx.emit" in GRAPH["relief_export.pipeline.export"]
    assert "relief_export.inputs" in GRAPH["relief_export.pipeline.export"]
    assert "relief_export.runtime.ort" in GRAPH["relief_export.bench.latency"]
    assert "relief_export.commands._options" in GRAPH["relief_export.cli"]
    assert "relief_export.channels.table" in GRAPH["relief_export.channels.ops.movement"]
