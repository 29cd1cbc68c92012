"""Exact structural compaction of masked models."""

from .compact import compact, compact_with_report, verify
from .report import CompactionReport, LayerChange

__all__ = ["CompactionReport", "LayerChange", "compact", "compact_with_report", "verify"]
