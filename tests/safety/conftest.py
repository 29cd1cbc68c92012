import importlib.util
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"


@pytest.fixture(scope="session")
def fuzz():
    """tools/fuzz.py as a module (its payload builders and the harness itself)."""
    spec = importlib.util.spec_from_file_location("relief_fuzz", TOOLS / "fuzz.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["relief_fuzz"] = module
    spec.loader.exec_module(module)
    return module
