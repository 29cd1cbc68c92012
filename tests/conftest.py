import os

import pytest
import torch


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long test; runs when RELIEF_EXPORT_SLOW=1 "
                            "(CI sets it)")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("RELIEF_EXPORT_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set RELIEF_EXPORT_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    yield
