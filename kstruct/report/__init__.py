"""The report of a run: `Report` and its `StageReport` rows (text, Markdown, JSON), how a stage is
measured (`measure`), per-layer statistics (`layer_stats`) and the figures (`plots`)."""

from kstruct.report.table import Report, StageReport

__all__ = ["Report", "StageReport"]
