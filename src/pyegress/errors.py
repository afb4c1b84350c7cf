"""The one exception hierarchy of pyegress."""

from __future__ import annotations

from .redaction import scrub


class EgressError(Exception):
    """Base class of every error pyegress raises; its text never shows a secret (:func:`scrub`).

    ``code`` is the HTTP status LiveKit reports for it in ``EgressInfo.error_code`` (400 bad
    request, 404 room or track not found, 412 failed precondition, 500 internal, 503
    unavailable); a subclass sets its usual one, ``code=`` overrides it where it is raised.
    """

    code = 500

    def __init__(self, *args: object, code: int | None = None) -> None:
        super().__init__(*args)
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return scrub(super().__str__())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class InvalidRequestError(EgressError, ValueError):
    """A request field is malformed or inconsistent; ``field`` names it (dotted path)."""

    code = 400

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class NotSupportedError(EgressError, NotImplementedError):
    """The request type or option is not supported (yet) by pyegress."""

    code = 400  # LiveKit's "... is not yet supported" is an invalid argument


class EgressNotFoundError(EgressError, LookupError):
    """No egress with that id is known to this service."""

    code = 404


class SourceError(EgressError):
    """The room, participant or track to record cannot be found (``code=404`` where raised)
    or joined (503, unavailable)."""

    code = 503


class OutputError(EgressError):
    """An output could not be opened, written or finished."""


class TransientError(EgressError):
    """A failure that a retry of the egress may not meet again (the egress is retried up to
    ``EgressService(max_retries=...)`` times)."""


class RoomConnectionLostError(TransientError, SourceError):
    """The connection to the room was lost and not regained: the recording ended early."""


class StoreUnreachableError(TransientError, OutputError):
    """Every output's uploads failed past the store's own retries (the files stayed local)."""
