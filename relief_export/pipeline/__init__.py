"""The one place that composes the stages: ``export_onnx`` (``export.py``) runs
load (inputs) -> compact (compile) -> emit -> [sparse compute] -> [int8] -> encode /
metadata / IR version (ONNX passes) -> verify -> write (files). The stages below see only
modules and files."""

from .examples import real_inputs
from .export import export_onnx
from .report import ExportReport, kept_table, sparse_table, tensor_table

__all__ = ["ExportReport", "export_onnx", "kept_table", "real_inputs", "sparse_table",
           "tensor_table"]
