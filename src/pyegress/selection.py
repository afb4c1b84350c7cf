"""Who a room composite records: participants included or excluded by identity, kind or attribute.

A consent rule such as ``attribute:recording_consent=false`` is judged on the participant's
attributes as they are now, so a participant who withdraws consent leaves the picture and the
mix from the next frame on, and comes back when the attribute flips again. Rules are written
``identity:<identity>``, ``kind:<agent|sip|standard|ingress|egress|connector|bridge>`` or
``attribute:<key>=<value>`` (the same text in the API, the CLI and the worker config).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from livekit import rtc

from .errors import InvalidRequestError
from .sources.members import Participant

_KIND_PREFIX = "PARTICIPANT_KIND_"
KINDS = tuple(k.removeprefix(_KIND_PREFIX).lower() for k in rtc.ParticipantKind.keys())  # noqa: SIM118


@dataclass(frozen=True)
class Rule:
    """One participant matcher: exactly one of identity, kind (``rtc.ParticipantKind``) or
    attribute ``(key, value)``."""

    identity: str = ""
    kind: int | None = None
    attribute: tuple[str, str] | None = None

    def matches(self, participant: Participant) -> bool:
        """Whether this rule names ``participant``.

        Args:
            participant: judged on its identity, kind and current attributes.

        Returns:
            True when it matches.
        """
        if self.identity:
            return participant.identity == self.identity
        if self.kind is not None:
            return participant.kind == self.kind
        if self.attribute is not None:
            key, value = self.attribute
            return participant.attributes.get(key) == value
        return False

    @classmethod
    def parse(cls, text: str, field: str = "rule") -> Rule:
        """A rule from its text: ``identity:alice``, ``kind:agent``,
        ``attribute:recording_consent=false``.

        Args:
            text: the rule.
            field: the name errors give it.

        Returns:
            The rule.

        Raises:
            InvalidRequestError: malformed text or an unknown kind, naming ``field``.
        """
        what, sep, arg = text.partition(":")
        what = what.strip().lower()
        if not sep or not arg:
            expected = "identity:<id>, kind:<kind> or attribute:<key>=<value>"
            raise InvalidRequestError(field, f"{text!r}: expected {expected}")
        if what == "identity":
            return cls(identity=arg)
        if what == "kind":
            name = arg.strip().lower()
            if name not in KINDS:
                raise InvalidRequestError(field, f"{text!r}: unknown kind; known: {', '.join(KINDS)}")
            return cls(kind=rtc.ParticipantKind.Value(_KIND_PREFIX + name.upper()))
        if what in ("attribute", "attr"):
            key, eq, value = arg.partition("=")
            if not eq or not key:
                raise InvalidRequestError(field, f"{text!r}: expected attribute:<key>=<value>")
            return cls(attribute=(key, value))
        raise InvalidRequestError(field, f"{text!r}: unknown rule {what!r}; use identity, kind or attribute")

    def __str__(self) -> str:
        if self.identity:
            return f"identity:{self.identity}"
        if self.kind is not None:
            return "kind:" + rtc.ParticipantKind.Name(self.kind).removeprefix(_KIND_PREFIX).lower()  # type: ignore[arg-type]
        if self.attribute is not None:
            return f"attribute:{self.attribute[0]}={self.attribute[1]}"
        return ""


@dataclass(frozen=True)
class Selection:
    """Who is recorded: with ``include`` rules only participants matching one of them, and never
    one matching an ``exclude`` rule (exclusion wins). ``hide_without_video`` leaves
    participants who publish no video (agents that only speak) out of the picture; they are
    still heard."""

    include: tuple[Rule, ...] = ()
    exclude: tuple[Rule, ...] = ()
    hide_without_video: bool = False

    def records(self, participant: Participant) -> bool:
        """Whether ``participant``'s picture and sound may reach the output now.

        Args:
            participant: judged on its identity, kind and current attributes.

        Returns:
            False when an ``exclude`` rule matches, or ``include`` rules exist and none does.
        """
        if any(r.matches(participant) for r in self.exclude):
            return False
        return not self.include or any(r.matches(participant) for r in self.include)

    @classmethod
    def of(
        cls,
        include: Iterable[str | Rule] = (),
        exclude: Iterable[str | Rule] = (),
        *,
        hide_without_video: bool = False,
        field: str = "selection",
    ) -> Selection:
        """A selection from rule texts (or rules).

        Args:
            include: rules of who may be recorded (empty: everyone not excluded).
            exclude: rules of who is never recorded (they win over ``include``).
            hide_without_video: no tile for participants who publish no video.
            field: the name errors give the selection (``selection``, a config key, ...).

        Returns:
            The selection.

        Raises:
            InvalidRequestError: a rule's text is malformed, naming ``field.include[i]`` or
                ``field.exclude[i]``.
        """
        return cls(
            _rules(include, f"{field}.include"), _rules(exclude, f"{field}.exclude"), hide_without_video
        )

    def to_dict(self) -> dict[str, object]:
        """The rules as text (for logs, manifests and the worker config).

        Returns:
            ``include`` and ``exclude`` as lists of rule texts, and ``hide_without_video``.
        """
        return {
            "include": [str(r) for r in self.include],
            "exclude": [str(r) for r in self.exclude],
            "hide_without_video": self.hide_without_video,
        }


def _rules(items: Iterable[str | Rule], field: str) -> tuple[Rule, ...]:
    if isinstance(items, str):  # one rule given bare: not its characters
        items = [items]
    seq: Sequence[str | Rule] = list(items)
    return tuple(r if isinstance(r, Rule) else Rule.parse(r, f"{field}[{i}]") for i, r in enumerate(seq))
