"""Architecture families under three kinds of masks: compacted and exported exactly, never
larger, and dead units removed (see relief_export.bench.families and tools/families.py)."""

from __future__ import annotations

import pytest

from relief_export.bench.families import FAMILIES, MASKS, available, measure

HAND_WRITTEN = [name for name, family in FAMILIES.items()
                if family.needs is None and not family.archive]
SLOW = [name for name, family in FAMILIES.items() if family.needs or family.archive]
# removed / dead under "zeros 50%", measured by tools/families.py, with some margin: the rest
# are constants read by zero-padded convolutions (they vary at the borders) or kept whole
ZEROS_REMOVED_AT_LEAST = {
    "inverted residual (depthwise, ReLU6)": 0.75, "squeeze-and-excitation": 0.7,
    "DenseNet concat block": 0.7, "UNet (ConvTranspose2d, skip concat)": 0.9,
    "Conv1d audio": 0.65, "F.linear on own parameters": 0.8,
    "option-A ResNet-20 (.pt2)": 0.7, "HF ResNet": 0.35, "HF MobileNetV2": 0.75,
    "HF ConvNeXt": 0.5, "HF ViT": 0.2, "HF BERT (token ids)": 0.2}


def check(name: str, mask: str) -> None:
    row = measure(name, mask)
    family = FAMILIES[name]
    assert row["captured"] == ("torch.export" if family.needs or family.archive
                               else "torch.fx")
    assert row["error torch"] <= 1e-5
    assert row["error onnxruntime"] <= 1e-4
    assert row["parameters after"] <= row["parameters before"]
    assert row["dead removed"] <= row["dead units"]
    if mask == "zeros 50%":
        assert row["dead units"] > 0
        assert row["dead removed"] >= ZEROS_REMOVED_AT_LEAST[name] * row["dead units"], row
        assert row["parameters after"] < row["parameters before"]


@pytest.mark.parametrize("name", HAND_WRITTEN)
def test_hand_written_families_with_dead_units(name):
    check(name, "zeros 50%")


@pytest.mark.slow
@pytest.mark.parametrize("mask", [m for m in MASKS if m != "zeros 50%"])
@pytest.mark.parametrize("name", HAND_WRITTEN)
def test_hand_written_families_under_prune_masks(name, mask):
    check(name, mask)


@pytest.mark.slow
@pytest.mark.parametrize("mask", list(MASKS))
@pytest.mark.parametrize("name", SLOW)
def test_hugging_face_and_archived_families(name, mask):
    if not available(FAMILIES[name]):
        pytest.skip(f"needs {FAMILIES[name].needs}")
    check(name, mask)
