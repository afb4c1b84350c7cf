"""Outputs: each owns its muxer and sink and reports its part of EgressInfo."""

from .base import Output
from .file import FileOutput

__all__ = ["FileOutput", "Output"]
