"""Normalization of HL7 v2 values into plain, typed values (pure functions)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo

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
    match = _DTM.match(value.strip())
    if match is None:
        return None
    parts = match.groupdict()
    fraction = parts["fraction"] or ""
    zone: tzinfo = default_zone
    if parts["offset"]:
        sign = 1 if parts["offset"][0] == "+" else -1
        hours, minutes = int(parts["offset"][1:3]), int(parts["offset"][3:5])
        zone = timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        local = datetime(
            int(parts["year"]),
            int(parts["month"] or 1),
            int(parts["day"] or 1),
            int(parts["hour"] or 0),
            int(parts["minute"] or 0),
            int(parts["second"] or 0),
            int(fraction.ljust(6, "0")) if fraction else 0,
            tzinfo=zone,
        )
    except ValueError:
        return None
    return local.astimezone(UTC)


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
