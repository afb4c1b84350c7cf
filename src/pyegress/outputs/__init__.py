"""Outputs: one small contract (open / write / close / result) and one factory; each kind owns
its muxer and sink, its part of EgressInfo, its uploads and its manifest."""

from .base import FrameOutput, Output, PacketOutput, PcmOutput
from .factory import build_outputs
from .file import FileOutput
from .images import ImageOutput
from .segments import SegmentOutput
from .stream import StreamOutput, StreamSink
from .websocket import WebSocketOutput

__all__ = [
    "FileOutput",
    "FrameOutput",
    "ImageOutput",
    "Output",
    "PacketOutput",
    "PcmOutput",
    "SegmentOutput",
    "StreamOutput",
    "StreamSink",
    "WebSocketOutput",
    "build_outputs",
]
