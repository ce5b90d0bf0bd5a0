"""Building acknowledgements (ACK) for inbound messages.

Only the inbound MSH is read, so an ACK can be built for a message whose body is
garbage or whose bytes do not decode: that is exactly when the sender most
needs an answer. Framing (MLLP) is the connector's job; this returns the bare
message bytes.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from .charset import DEFAULT_CODEC, lookup_codec, read_msh18
from .delimiters import DEFAULT_ENCODING, Encoding, read_encoding
from .errors import Hl7ParseError
from .escape import escape
from .message import Message

__all__ = ["ACK_CODES", "ERROR_CODES", "AckError", "build_ack", "build_batch_ack"]

#: HL7 table 0357, message error condition codes.
ERROR_CODES: dict[int, str] = {
    0: "Message accepted",
    100: "Segment sequence error",
    101: "Required field missing",
    102: "Data type error",
    103: "Table value not found",
    104: "Value too long",
    200: "Unsupported message type",
    201: "Unsupported event code",
    202: "Unsupported processing id",
    203: "Unsupported version id",
    204: "Unknown key identifier",
    205: "Duplicate key identifier",
    206: "Application record locked",
    207: "Application internal error",
}

#: Literal MSA-1 codes (HL7 table 0008).
ACK_CODES = frozenset({"AA", "AE", "AR", "CA", "CE", "CR"})

# The bus's three-valued delivery status -> (original mode, enhanced mode).
_STATUS = {
    "delivered": ("AA", "CA"),
    "errored": ("AE", "CE"),
    "rejected": ("AR", "CR"),
}

_SEVERITIES = frozenset({"E", "W", "I", "F"})


@dataclass(frozen=True, slots=True)
class AckError:
    """What went wrong, for the ERR segment.

    ``code`` is from table 0357; ``segment``/``sequence``/``field`` locate the
    problem (segment id, 1-based occurrence, field number). ``text`` goes to the
    sender: keep patient data out of it like everywhere else.
    """

    code: int
    text: str
    segment: str | None = None
    sequence: int | None = None
    field: int | None = None
    severity: str = "E"

    def __post_init__(self) -> None:
        if self.code not in ERROR_CODES:
            raise ValueError(f"error code {self.code} is not in HL7 table 0357")
        if self.severity not in _SEVERITIES:
            raise ValueError(f"severity must be one of {sorted(_SEVERITIES)}")


class _Header:
    """The inbound MSH: delimiters, HL7-numbered raw fields, and the codec."""

    __slots__ = ("codec", "enc", "fields")

    def __init__(self, enc: Encoding, fields: list[str], codec: str) -> None:
        self.enc = enc
        self.fields = fields
        self.codec = codec

    def __getitem__(self, n: int) -> str:
        return self.fields[n] if n < len(self.fields) else ""

    def first(self, n: int, component: int = 1) -> str:
        """Raw component of the first repetition of field n."""
        value = self[n]
        if self.enc.repetition:
            value = value.split(self.enc.repetition, 1)[0]
        if self.enc.component:
            parts = value.split(self.enc.component)
            return parts[component - 1] if component <= len(parts) else ""
        return value if component == 1 else ""


def _first_line(text: str) -> str:
    text = text.lstrip("\ufeff \t\r\n")
    end = len(text)
    for term in ("\r", "\n"):
        i = text.find(term, 0, end)
        if i >= 0:
            end = i
    return text[:end]


def _header(data: bytes | str | Message, charset: str | None) -> _Header:
    if isinstance(data, Message):
        return _Header(data.encoding, list(data._fields_of(0)), data.charset)
    if isinstance(data, str):
        line = _first_line(data)
        codec = (lookup_codec(charset) if charset else None) or DEFAULT_CODEC
    else:
        raw = bytes(data)
        bom = raw.startswith(b"\xef\xbb\xbf")
        codec = (
            (lookup_codec(charset) if charset else None)
            or ("utf-8" if bom else lookup_codec(read_msh18(raw)))
            or DEFAULT_CODEC
        )
        start = len(raw) - len(raw.lstrip(b"\xef\xbb\xbf \t\r\n"))
        end = len(raw)
        for term in (b"\r", b"\n"):
            i = raw.find(term, start, end)
            if i >= 0:
                end = i
        try:
            line = raw[start:end].decode(codec)
        except (UnicodeDecodeError, LookupError):
            # Echo the header bytes exactly as received: latin-1 round-trips any
            # byte, and the ACK is then encoded in latin-1 too.
            line = raw[start:end].decode("latin-1")
            codec = "latin-1"
    if line[:3] != "MSH":
        raise Hl7ParseError("first segment is not MSH", segment_index=0)
    enc = read_encoding(line)
    fields = line.split(enc.field)
    fields.insert(1, enc.field)
    return _Header(enc, fields, codec)


def _timestamp(now: datetime | None) -> str:
    now = now or datetime.now(UTC).astimezone()
    # The offset is part of the key: equal instants in other zones format differently.
    return _format_timestamp(now, now.utcoffset())


# A listener builds every ACK of a second with the same `now` (MSH-7 has second precision):
# strftime and the version regex were over half of build_ack's time.
@lru_cache(maxsize=8)
def _format_timestamp(now: datetime, offset: timedelta | None) -> str:
    return now.strftime("%Y%m%d%H%M%S%z" if now.tzinfo else "%Y%m%d%H%M%S")


@lru_cache(maxsize=64)
def _version(raw: str) -> tuple[int, int]:
    m = re.match(r"\s*(\d+)\.(\d+)", raw)
    # Unknown versions get the current (v2.5+) ERR layout.
    return (int(m[1]), int(m[2])) if m else (2, 5)


def _msa_code(code: str, enhanced: bool) -> str:
    literal = code.strip().upper()
    if literal in ACK_CODES:
        return literal
    pair = _STATUS.get(code.strip().lower())
    if pair is None:
        raise ValueError(
            f"ACK code must be one of {sorted(ACK_CODES)} or {sorted(_STATUS)}, not {code!r}"
        )
    return pair[1] if enhanced else pair[0]


def _err_segment(error: AckError, enc: Encoding, version: tuple[int, int]) -> str:
    fs, cs, ss = enc.field, enc.component, enc.subcomponent
    desc = escape(ERROR_CODES[error.code], enc)
    location = [
        escape(error.segment or "", enc),
        "" if error.sequence is None else str(error.sequence),
        "" if error.field is None else str(error.field),
    ]
    while location and not location[-1]:
        location.pop()
    if version < (2, 5):
        # ERR-1 (ELD): segment^sequence^field^code&text&HL70357.
        code = ss.join((str(error.code), desc, "HL70357")) if ss else str(error.code)
        eld = cs.join([*location, *[""] * (3 - len(location)), code]) if cs else code
        return fs.join(("ERR", eld))
    # ERR-2 location, ERR-3 code (CWE), ERR-4 severity, ERR-7 diagnostic text.
    cwe = cs.join((str(error.code), desc, "HL70357")) if cs else str(error.code)
    erl = cs.join(location) if cs else (location[0] if location else "")
    return fs.join(("ERR", "", erl, cwe, error.severity, "", "", escape(error.text, enc)))


_UNREADABLE = {"AA": "AE", "CA": "AE", "AE": "AE", "CE": "AE"}


def _minimal_ack(msa1: str, reason: str, err_code: int, ts: str, control_id: str) -> bytes:
    enc = DEFAULT_ENCODING
    text = escape(reason, enc)
    msh = "|".join(("MSH", enc.msh2, "", "", "", "", ts, "", "ACK", control_id, "P", "2.5"))
    msa = "|".join(("MSA", msa1, "", text))
    err = _err_segment(AckError(err_code, reason), enc, (2, 5))
    return "\r".join((msh, msa, err)).encode(DEFAULT_CODEC) + b"\r"


def build_ack(
    data: bytes | str | Message,
    code: str,
    error: AckError | None = None,
    *,
    now: datetime | None = None,
    control_id: str | None = None,
    charset: str | None = None,
) -> bytes:
    """Build the ACK for ``data`` (message bytes, text, or a parsed Message).

    ``code`` is a literal MSA-1 code (AA/AE/AR/CA/CE/CR) or a delivery status,
    ``delivered``/``errored``/``rejected``, which becomes AA/AE/AR in original
    mode and CA/CE/CR in enhanced mode (MSH-15 or MSH-16 non-empty).

    The ACK uses the inbound delimiters, swaps sender and receiver (MSH-3/4 <->
    MSH-5/6), sets MSH-9 to ``ACK^<trigger>^ACK``, echoes MSH-11, MSH-12 and
    MSH-18, takes a fresh MSH-10 (or ``control_id``) and puts the inbound MSH-10
    into MSA-2. ``error`` adds an ERR segment (v2.5+: ERR-2/3/4; earlier: ERR-1)
    and its text as MSA-3. When the MSH itself cannot be read, the result is a
    minimal ACK with default delimiters and original-mode codes (the mode is
    unknown): ``AE`` for delivered/errored codes (nothing unreadable is
    accepted), ``AR`` for rejected ones, the reason in MSA-3 and ERR, MSA-2
    empty. Encoded in the inbound message's charset (``charset`` overrides, as for
    :func:`parse`), UTF-8 when unknown; segments end with ``\\r``; no MLLP framing.
    """
    ts = _timestamp(now)
    new_id = control_id if control_id is not None else uuid.uuid4().hex[:20].upper()
    try:
        head = _header(data, charset)
    except Hl7ParseError as exc:
        # No MSH, no mode: original-mode codes. Nothing readable can be accepted,
        # but errored-vs-rejected stays the caller's call: AR makes senders resend
        # (docs/architecture.md, Delivery), which for bytes that will never parse would
        # loop forever.
        msa1 = _UNREADABLE.get(_msa_code(code, False), "AR")
        err_code = 100 if exc.reason.startswith("first segment") else 102
        return _minimal_ack(msa1, f"MSH unreadable: {exc.reason}", err_code, ts, new_id)

    enc = head.enc
    fs, cs = enc.field, enc.component
    enhanced = bool(head[15].strip() or head[16].strip())
    msa1 = _msa_code(code, enhanced)
    version = _version(head.first(12))
    trigger = head.first(9, 2)
    msg_type = cs.join(("ACK", trigger, "ACK")) if trigger and cs else "ACK"
    msh = [
        "MSH",
        enc.msh2,
        head[5],
        head[6],
        head[3],
        head[4],
        ts,
        "",
        msg_type,
        escape(new_id, enc),
        head[11],
        head[12],
    ]
    if head[18]:
        msh += ["", "", "", "", "", head[18]]
    msa = ["MSA", msa1, head[10]]
    if error is not None:
        msa.append(escape(error.text, enc))
    segments = [fs.join(msh), fs.join(msa)]
    if error is not None:
        segments.append(_err_segment(error, enc, version))
    text = "\r".join(segments) + "\r"
    try:
        return text.encode(head.codec)
    except UnicodeEncodeError:
        # Only caller-supplied error text can fail here (echoed fields came from
        # this codec); a replaced character in it beats no ACK at all.
        return text.encode(head.codec, errors="replace")
    except LookupError:
        return text.encode(DEFAULT_CODEC)


_BATCH_HEADERS = (b"FHS", b"BHS")


def _batch_header_fields(batch: bytes) -> dict[bytes, list[bytes]]:
    """The FHS and BHS of a batch's first segments, as HL7-numbered raw fields (index n is
    FHS-n/BHS-n; 1 is the field separator)."""
    found: dict[bytes, list[bytes]] = {}
    for line in re.split(rb"\r\n?|\n", batch.lstrip(b"\xef\xbb\xbf \t\r\n"))[:2]:
        name = line[:3]
        if name in _BATCH_HEADERS and len(line) > 3:
            sep = line[3:4]
            fields = line.split(sep)
            fields.insert(1, sep)
            found[name] = fields
    return found


def build_batch_ack(
    batch: bytes,
    acks: list[bytes],
    *,
    now: datetime | None = None,
    control_id: str | None = None,
) -> bytes:
    """The acknowledgement of a batch received as one unit: a response batch holding ``acks``
    (one ACK per message, each already built in its message's charset), in the envelope the
    inbound batch had.

    BHS (from the inbound BHS, else FHS) swaps sender and receiver (BHS-3/4 <-> BHS-5/6), takes
    a fresh BHS-11 and echoes the inbound BHS-11 in BHS-12, the reference batch control id;
    BTS-1 counts the ACKs. An inbound FHS gets an FHS built the same way and FTS|1. The header
    fields are echoed as received (bytes), so any ASCII-compatible charset round-trips.
    """
    ts = _timestamp(now).encode("ascii")
    new_id = (control_id if control_id is not None else uuid.uuid4().hex[:20].upper()).encode()
    found = _batch_header_fields(batch)
    default = [b"", b"|", b"^~\\&"]

    def header(name: bytes, fields: list[bytes]) -> bytes:
        def f(n: int) -> bytes:
            return fields[n] if n < len(fields) else b""

        sep = f(1) or b"|"
        swapped = [name, f(2), f(5), f(6), f(3), f(4), ts, b"", b"", b"", new_id, f(11)]
        return sep.join(swapped) + b"\r"

    fhs = found.get(b"FHS")
    bhs = found.get(b"BHS") or fhs or default
    sep = (bhs[1] if len(bhs) > 1 else b"") or b"|"
    parts = [header(b"FHS", fhs)] if fhs is not None else []
    parts.append(header(b"BHS", bhs))
    parts.extend(acks)
    parts.append(sep.join((b"BTS", str(len(acks)).encode())) + b"\r")
    if fhs is not None:
        parts.append(sep.join((b"FTS", b"1")) + b"\r")
    return b"".join(parts)
