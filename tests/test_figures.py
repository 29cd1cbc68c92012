"""tools/figures.py: every README block has a script, every script a block, and splicing
replaces exactly the blocks' contents."""

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _figures_module():
    spec = importlib.util.spec_from_file_location("figures_tool", ROOT / "tools" / "figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_readme_block_has_a_script_and_back():
    tool = _figures_module()
    readme = (ROOT / "README.md").read_text()
    opened = re.findall(r"<!-- figures:(\w+) -->", readme)
    closed = re.findall(r"<!-- /figures:(\w+) -->", readme)
    assert opened == closed and len(set(opened)) == len(opened)
    assert set(opened) == set(tool.FIGURES)
    for name, command in tool.FIGURES.items():
        scripts = [part for part in command if part.endswith(".py")]
        assert all((ROOT / script).is_file() for script in scripts), name


def test_splice_replaces_only_block_contents(tmp_path, monkeypatch):
    tool = _figures_module()
    (tmp_path / "docs" / "figures").mkdir(parents=True)
    (tmp_path / "README.md").write_text(
        "intro 1.23x\n<!-- figures:suite -->\nold table\n<!-- /figures:suite -->\n"
        "middle\n<!-- figures:int8 -->\nkept: no file\n<!-- /figures:int8 -->\nend\n")
    (tmp_path / "docs" / "figures" / "suite.md").write_text("Produced by ...\nnew table\n")
    monkeypatch.setattr(tool, "ROOT", tmp_path)
    monkeypatch.setattr(tool, "FIGURES_DIR", tmp_path / "docs" / "figures")
    assert tool.splice_readme() == ["suite"]
    assert (tmp_path / "README.md").read_text() == (
        "intro 1.23x\n<!-- figures:suite -->\nProduced by ...\nnew table\n"
        "<!-- /figures:suite -->\nmiddle\n<!-- figures:int8 -->\nkept: no file\n"
        "<!-- /figures:int8 -->\nend\n")
