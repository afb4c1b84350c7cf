"""How an egress ends, in LiveKit's words: the end reasons of ``EgressInfo.details`` and the
messages and codes of an aborted or limited egress (livekit-protocol's ``livekit_egress.go``),
so code written against LiveKit reads pyegress's infos unchanged.
"""

from __future__ import annotations


class EndReason:
    """LiveKit's end reasons; ``details`` reads ``End reason: <reason>``."""

    API = "StopEgress API"
    KILLED = "Process killed"
    SOURCE_CLOSED = "Source closed"
    LIMIT_REACHED = "Session limit reached"
    STREAMS_STOPPED = "All streams stopped"
    FAILURE = "Failure"


#: ``error`` of an egress ended by a session limit (``EGRESS_LIMIT_REACHED``).
MSG_LIMIT_REACHED = "Session limit reached"
#: ``error`` of an egress whose session limit passed before it could start (``EGRESS_ABORTED``).
MSG_LIMIT_REACHED_WITHOUT_START = "Session limit reached before start signal"
#: ``error`` of an egress stopped before it started (``EGRESS_ABORTED``).
MSG_STOPPED_BEFORE_STARTED = "Stop called before pipeline could start"


def end_details(reason: str, detail: str = "") -> str:
    """``End reason: <reason>``, with pyegress's specifics after it in parentheses (LiveKit's
    text stays a prefix: ``details.startswith("End reason: Source closed")`` holds)."""
    return f"End reason: {reason}" + (f" ({detail})" if detail else "")
