"""Exceptions raised by the HL7 v2 wire-format layer.

Messages name *what* is wrong and *where* (segment index, field number, byte or
character offset), never the offending values: exception text ends up in logs and
DLQ headers, and HL7 payloads are full of PHI (docs/architecture.md, Privacy).
"""

from __future__ import annotations

__all__ = ["Hl7CharsetError", "Hl7ParseError"]


class Hl7ParseError(ValueError):
    """The input is not a readable HL7 v2 message.

    ``segment_index`` is 0-based over the segments as parsed (blank lines dropped,
    MSH is 0; for batch files it counts from the first segment of the file),
    ``field`` is the HL7 field number, ``offset`` the byte offset of charset
    errors. Any of them is None when it does not apply. ``reason`` is the message
    without the location, free of patient data (logs, DLQ headers).
    """

    def __init__(
        self,
        reason: str,
        *,
        segment_index: int | None = None,
        field: int | None = None,
        offset: int | None = None,
    ) -> None:
        self.reason = reason
        self.segment_index = segment_index
        self.field = field
        self.offset = offset
        where = []
        if segment_index is not None:
            where.append(f"segment {segment_index}")
        if field is not None:
            where.append(f"field {field}")
        if offset is not None:
            where.append(f"offset {offset}")
        super().__init__(f"{reason} ({', '.join(where)})" if where else reason)

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments would otherwise be lost when the error crosses a
        # process boundary (multiprocessing, faust workers).
        return (_rebuild, (type(self), self.args, self.__dict__.copy()))


class Hl7CharsetError(Hl7ParseError):
    """The bytes cannot be decoded with the declared (or overridden) character set.

    ``offset`` is the byte offset of the first undecodable byte in the input as
    given (a stripped byte-order mark is counted), ``charset`` the Python codec
    that failed.
    """

    def __init__(
        self,
        reason: str,
        *,
        charset: str | None = None,
        segment_index: int | None = None,
        offset: int | None = None,
    ) -> None:
        self.charset = charset
        super().__init__(reason, segment_index=segment_index, offset=offset)


def _rebuild(
    cls: type[Hl7ParseError], args: tuple[object, ...], state: dict[str, object]
) -> Hl7ParseError:
    err = cls.__new__(cls)
    ValueError.__init__(err, *args)
    err.__dict__.update(state)
    return err
