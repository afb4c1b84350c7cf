"""Time-aligned sidecars: events, transcript and chat beside the media, on its media clock.

Times are seconds of the recorded timeline (0 = the first output frame, cut pauses cut the
same way, :mod:`pyegress.pauses`) with the wall time (unix ns) beside them. See
:class:`~pyegress.sidecars.collect.Sidecars`.
"""

from .collect import SIDECAR_KINDS, Sidecars, check_kinds
from .vtt import Cue, render_vtt

__all__ = ["SIDECAR_KINDS", "Cue", "Sidecars", "check_kinds", "render_vtt"]
