"""The SQS source, in parts with one job each (see `source`)."""

from .source import SqsSource

__all__ = ["SqsSource"]
