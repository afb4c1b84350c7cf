"""Sources: where frames come from (a LiveKit room; later a web page)."""

from .room import RoomSource

__all__ = ["RoomSource"]
