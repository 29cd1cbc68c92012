"""ONNX emission, weight encoding and verification."""

from .export import ExportReport, export_onnx

__all__ = ["ExportReport", "export_onnx"]
