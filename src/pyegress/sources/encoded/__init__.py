"""The encoded receive path: LiveKit's signaling plus aiortc, handing on frames as sent.

The rtc SDK hands subscribers decoded pictures and PCM only; this path joins the room itself
(:mod:`.signal`), receives RTP with aiortc (:mod:`.subscriber`) and hands on depacketized
frames (:class:`~.frames.EncodedFrame`) with their RTP timestamps and sender-report times.
"""

from ...media.encoded import EncodedFrame
from .subscriber import EncodedSubscriber, RemoteTrack

__all__ = ["EncodedFrame", "EncodedSubscriber", "RemoteTrack"]
