"""The delimiters a message declares in MSH-1 and MSH-2 (its "encoding characters")."""

from __future__ import annotations

from typing import NamedTuple

from .errors import Hl7ParseError

__all__ = ["DEFAULT_ENCODING", "Encoding", "read_encoding"]

_HEADER_NAMES = frozenset({"MSH", "FHS", "BHS"})


class Encoding(NamedTuple):
    """Delimiters of one message.

    A character the sender did not declare (MSH-2 with fewer than four
    characters) is ``""``: that level is then simply not split, and escape
    sequences are not interpreted when there is no escape character. Unlike
    python-hl7 we do not substitute the defaults for undeclared characters,
    because a ``&`` in such a message is data, not a delimiter.
    ``truncation`` is the v2.7 fifth character (``#``), kept for round trips.
    """

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    truncation: str = ""

    @property
    def msh2(self) -> str:
        """MSH-2 as it would be written."""
        return self.component + self.repetition + self.escape + self.subcomponent + self.truncation


DEFAULT_ENCODING = Encoding()


def read_encoding(header: str, *, segment_index: int = 0) -> Encoding:
    """Read the delimiters from an MSH (or FHS/BHS) segment string.

    Raises :class:`Hl7ParseError` when they are missing or unusable (repeated,
    alphanumeric, whitespace), since nothing after them can be split reliably.
    """
    if header[:3] not in _HEADER_NAMES or len(header) < 5:
        raise Hl7ParseError(
            "header segment too short for encoding characters", segment_index=segment_index
        )
    fs = header[3]
    end = header.find(fs, 4)
    chars = header[4:] if end < 0 else header[4:end]
    # Fields after MSH-2 start with fs; an MSH-2 longer than five characters is
    # data where a delimiter should be.
    if not 1 <= len(chars) <= 5:
        raise Hl7ParseError(
            "MSH-2 must hold 1 to 5 encoding characters", segment_index=segment_index, field=2
        )
    every = fs + chars
    if len(set(every)) != len(every) or any(c.isalnum() or c.isspace() for c in every):
        raise Hl7ParseError(
            "encoding characters must be distinct, non-alphanumeric and non-blank",
            segment_index=segment_index,
            field=2,
        )
    c, r, e, s, t = [*chars, "", "", "", "", ""][:5]
    return Encoding(fs, c, r, e, s, t)
