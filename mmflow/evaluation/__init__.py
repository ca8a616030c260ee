"""Evaluation: metrics and benchmark lists registered by plugins, scored by one runner (``mmflow evaluate``).

The core knows no modality: a metric names the kinds of files it reads (``"audio"``, ``"video"``, ...), a
benchmark lists items (pipeline inputs + reference files), and the runner connects the two.
"""

from .metric import BenchmarkItem, Metric, Sample, first_kind

__all__ = ["BenchmarkItem", "Metric", "Sample", "first_kind"]
