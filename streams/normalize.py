"""Normalization of HL7 v2 values into plain, typed values (pure functions)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from functools import lru_cache

# YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ] (HL7 v2 DTM / TS.1)
_DTM = re.compile(
    r"^(?P<year>\d{4})(?P<month>\d{2})?(?P<day>\d{2})?(?P<hour>\d{2})?(?P<minute>\d{2})?"
    r"(?P<second>\d{2})?(?:\.(?P<fraction>\d{1,4}))?(?P<offset>[+-]\d{4})?$"
)
_COMPARATOR = re.compile(r"^\s*(?P<op><=|>=|<>|<|>|=)?\s*(?P<num>[+-]?(?:\d+\.?\d*|\.\d+))\s*$")


def to_utc(value: str | None, default_zone: tzinfo) -> datetime | None:
    """An HL7 DTM as a UTC instant; the message's own offset wins over the feed's zone.

    Missing month/day/time parts take their first value, so a date-only DTM becomes local
    midnight. Values that are not a DTM give None rather than a guess.
    """
    if not value:
        return None
    found = _read_dtm(value, default_zone)
    return found.utc if found is not None else None


@lru_cache(maxsize=8192)
def _offset_zone(offset: str) -> tzinfo:
    sign = 1 if offset[0] == "+" else -1
    hours, minutes = int(offset[1:3]), int(offset[3:5])
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


@lru_cache(maxsize=65536)
def _read_dtm(value: str, default_zone: tzinfo) -> Instant | None:
    """to_utc and read_dtm of a non-empty value (cached: a message repeats its timestamps, and
    the result is immutable)."""
    match = _DTM.match(value.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    zone: tzinfo = _offset_zone(offset) if offset else default_zone
    try:
        local = datetime(
            int(year),
            int(month or 1),
            int(day or 1),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int(fraction.ljust(6, "0")) if fraction else 0,
            tzinfo=zone,
        )
    except ValueError:
        return None
    mask = "YYYY"
    if month:
        mask += "MM"
    if day:
        mask += "DD"
    if hour:
        mask += "HH"
    if minute:
        mask += "MM"
    if second:
        mask += "SS"
        if fraction:
            mask += "." + "S" * len(fraction)
    return Instant(local.astimezone(UTC), offset, mask)


def iso_date(value: str | None) -> str | None:
    """HL7 DT/DTM to an ISO date at the source's precision (YYYY, YYYY-MM or YYYY-MM-DD)."""
    if not value:
        return None
    match = _DTM.match(value.strip())
    if match is None:
        return None
    parts = [match["year"], match["month"], match["day"]]
    return "-".join(p for p in parts if p)


def numeric_with_comparator(value: str | None) -> tuple[float | None, str | None]:
    """'<0.5' -> (0.5, '<'); '13.2' -> (13.2, None); anything else -> (None, None)."""
    if not value:
        return None, None
    match = _COMPARATOR.match(value)
    if match is None:
        return None, None
    return float(match["num"]), match["op"]


@dataclass(frozen=True)
class Instant:
    """An HL7 DTM read whole: the UTC instant, the offset the source sent and its precision."""

    utc: datetime
    offset: str | None  # "+0900" as sent; None when the feed's zone was applied
    precision: str  # HL7 DTM mask of what was sent, e.g. "YYYYMMDDHHMM" or "YYYYMMDDHHMMSS.SS"


def read_dtm(value: str | None, default_zone: tzinfo) -> Instant | None:
    """:func:`to_utc`, keeping the source offset and precision beside the instant."""
    if not value:
        return None
    return _read_dtm(value, default_zone)


# "10-20", "10 - 20", "-1.5-2", "<200", ">=40", "0.70-1.30"
_RANGE = re.compile(
    r"^\s*(?P<low>[+-]?(?:\d+\.?\d*|\.\d+))\s*[-~]\s*(?P<high>[+-]?(?:\d+\.?\d*|\.\d+))\s*$"
)


@dataclass(frozen=True)
class ReferenceRange:
    low: float | None = None
    high: float | None = None
    low_comparator: str | None = None
    high_comparator: str | None = None


def reference_range(value: str | None) -> ReferenceRange:
    """OBX-7 split: '10-20' -> (10, 20); '<200' -> high 200 '<'; '>40' -> low 40 '>'.

    Text ranges ('negative', 'see note') give an empty range; the text stays in the event.
    """
    if not value:
        return ReferenceRange()
    match = _RANGE.match(value)
    if match is not None:
        return ReferenceRange(float(match["low"]), float(match["high"]))
    number, op = numeric_with_comparator(value)
    if number is None or op is None:
        return ReferenceRange()
    if op in ("<", "<="):
        return ReferenceRange(high=number, high_comparator=op)
    if op in (">", ">="):
        return ReferenceRange(low=number, low_comparator=op)
    return ReferenceRange()


def to_float(value: str | None) -> float | None:
    """A plain HL7 NM value as a float; None for anything else."""
    if not value:
        return None
    try:
        return float(value.strip())
    except ValueError:
        return None


def to_int(value: str | None) -> int | None:
    if not value:
        return None
    text = value.strip()
    return int(text) if text.lstrip("+-").isdigit() else None


def yes_no(value: str | None) -> bool | None:
    """HL7 table 0136 (Y/N) as a boolean; None when absent or anything else."""
    if not value:
        return None
    return {"Y": True, "N": False}.get(value.strip().upper())
