import inspect

import relief_export
from relief_export import data, models


def test_public_api_is_pinned():
    assert sorted(relief_export.__all__) == sorted([
        "BenchReport", "CompactionReport", "ExportReport", "ReliefError", "VerificationError",
        "__version__", "benchmark", "compact", "compact_with_report", "export_onnx",
        "load_model", "read_model", "relief", "relief_scores", "relief_step",
        "save_checkpoint"])
    for name in relief_export.__all__:
        assert hasattr(relief_export, name), name


def test_contract_signatures():
    def keywords(function):
        return list(inspect.signature(function).parameters)

    assert keywords(relief_export.relief_scores)[:3] == ["model", "inputs", "conv_score"]
    assert keywords(relief_export.relief_step)[:5] == ["model", "inputs", "alpha_fc",
                                                       "alpha_conv", "conv_score"]
    assert keywords(relief_export.compact)[:2] == ["model", "example_inputs"]
    assert keywords(relief_export.export_onnx)[:3] == ["model_or_path", "out_path",
                                                       "example_inputs"]
    assert keywords(relief_export.benchmark)[:3] == ["paths", "batch_sizes", "threads"]
    assert keywords(relief_export.load_model)[:2] == ["path", "trust"]
    assert keywords(models.build)[:3] == ["name", "num_classes", "in_channels"]
    assert keywords(data.load) == ["spec", "split"]
    assert callable(models.names)
