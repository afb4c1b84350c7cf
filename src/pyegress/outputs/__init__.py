"""Outputs: each owns its muxer and sink and reports its part of EgressInfo."""

from .base import Output
from .file import FileOutput
from .images import ImageOutput
from .segments import SegmentOutput
from .stream import StreamOutput, StreamSink
from .websocket import WebSocketOutput

__all__ = [
    "FileOutput",
    "ImageOutput",
    "Output",
    "SegmentOutput",
    "StreamOutput",
    "StreamSink",
    "WebSocketOutput",
]
