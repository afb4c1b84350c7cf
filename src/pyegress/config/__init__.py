"""Request → one validated, normalised config. Every error a user can cause is found here.

Recorders, outputs and the CLI read the :class:`EgressConfig`, never the raw request.
"""

from ..redaction import redact_url as redact_stream_url
from .model import (
    AudioRoute,
    Channel,
    EgressConfig,
    FileTarget,
    FileType,
    ImageSuffix,
    ImageTarget,
    Kind,
    Request,
    SegmentSuffix,
    SegmentTarget,
    StreamTarget,
    StreamURL,
)
from .outputs import (
    DEFAULT_CAPTURE_INTERVAL,
    DEFAULT_SEGMENT_DURATION,
    audio_for,
    check_stream_url,
)
from .requests import REQUEST_TYPES, RequestType, build_config, request_type

__all__ = [
    "DEFAULT_CAPTURE_INTERVAL",
    "DEFAULT_SEGMENT_DURATION",
    "REQUEST_TYPES",
    "AudioRoute",
    "Channel",
    "EgressConfig",
    "FileTarget",
    "FileType",
    "ImageSuffix",
    "ImageTarget",
    "Kind",
    "Request",
    "RequestType",
    "SegmentSuffix",
    "SegmentTarget",
    "StreamTarget",
    "StreamURL",
    "audio_for",
    "build_config",
    "check_stream_url",
    "redact_stream_url",
    "request_type",
]
