"""Generalizers: dates shifted or truncated, ages of 90 and over aggregated, postal codes cut to
their district (pure functions of one value)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

from hl7bus.streams.deid.errors import DeidError

#: 3-digit ZIP areas of 20,000 people or fewer (HHS de-identification guidance, 2000 census):
#: Safe Harbor turns them into 000.
RESTRICTED_ZIP3 = frozenset(
    {"036", "059", "063", "102", "203", "556", "692", "790", "821", "823", "830", "831", "878"}
    | {"879", "884", "890", "893"}
)

_ISO_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")


def shift_date(value: Any, offset: timedelta) -> Any:
    """An instant, or an ISO date string of any precision, moved by ``offset``."""
    if isinstance(value, datetime):
        return value + offset
    m = _ISO_DATE.match(str(value))
    if not m:
        raise DeidError("a date field holds no ISO date", "bad_date")
    year, month, day = m.group(1), m.group(2), m.group(3)
    # Partial dates: shift their middle and keep the precision.
    anchor = date(int(year), int(month or 7), int(day or (15 if month else 1)))
    moved = anchor + offset
    if day:
        return moved.isoformat()
    if month:
        return f"{moved.year:04d}-{moved.month:02d}"
    return f"{moved.year:04d}"


def truncate_date(value: Any, to: str) -> Any:
    """An instant to the first instant of its UTC year or month; an ISO date string to
    ``YYYY`` or ``YYYY-MM``."""
    if isinstance(value, datetime):
        utc = value.astimezone(UTC)
        return datetime(utc.year, 1 if to == "year" else utc.month, 1, tzinfo=UTC)
    m = _ISO_DATE.match(str(value))
    if not m:
        raise DeidError("a date field holds no ISO date", "bad_date")
    if to == "year" or not m.group(2):
        return m.group(1)
    return f"{m.group(1)}-{m.group(2)}"


def age90(birth_year: int, at: datetime) -> int:
    """A birth year; for ages of 90 or more at ``at``, the birth year of a 90-year-old."""
    return max(birth_year, at.year - 90)


_US_ZIP = re.compile(r"^\s*(\d{3})\d{2}(?:-?\d{4})?\s*$")
_KR_POSTAL = re.compile(r"^\s*(\d{3})\d{2}\s*$")


def zip3(value: str) -> str | None:
    """A US ZIP (5 or 9 digits) -> its first 3 digits, '000' for restricted areas; else None."""
    m = _US_ZIP.match(value)
    if not m:
        return None
    return "000" if m.group(1) in RESTRICTED_ZIP3 else m.group(1)


def kr_postal3(value: str) -> str | None:
    """A Korean 5-digit postal code (since 2015) -> its first 3 digits; anything else None."""
    m = _KR_POSTAL.match(value)
    return m.group(1) if m else None
