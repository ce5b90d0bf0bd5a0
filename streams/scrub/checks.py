"""What the scrubber's patterns cannot judge alone: plausibility checks of a match (RRN, IP,
SSN, enough digits, a month) and the shifting of a matched date, keeping its format.

A failed check leaves the text as it was (streams/scrub/patterns.py applies them).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from datetime import date

MM = "(?:0[1-9]|1[0-2])"
DD = "(?:0[1-9]|[12][0-9]|3[01])"
MONTHS = (
    "january", "february", "march", "april", "may", "june", "july", "august", "september",
    "october", "november", "december",
)  # fmt: skip


_CENTURY = {"1": 1900, "2": 1900, "5": 1900, "6": 1900, "3": 2000, "4": 2000, "7": 2000,
            "8": 2000, "9": 1800, "0": 1800}  # fmt: skip
DIGITS = re.compile("[0-9]+")
RRN_VALUE = re.compile(f"[0-9]{{2}}{MM}{DD}-?[0-9]{{7}}")
_ALPHA = re.compile("[A-Za-z]+")


def _valid(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def plausible_rrn(s: str) -> bool:
    """A 13-digit run without hyphen is an RRN only if YYMMDD is a real date in the century its
    gender digit gives (1/2/5/6: 1900s, 3/4/7/8: 2000s, 9/0: 1800s)."""
    digits = "".join(DIGITS.findall(s))
    year = _CENTURY[digits[6]] + int(digits[:2])
    return _valid(year, int(digits[2:4]), int(digits[4:6])) is not None


def valid_ip(s: str) -> bool:
    try:
        ipaddress.ip_address(s)
    except ValueError:
        return False
    return True


def _valid_ssn(s: str) -> bool:
    a, b, c = DIGITS.findall(s)
    return a not in ("000", "666") and b != "00" and c != "0000"


def _pad(old: str, value: int, padded: bool) -> str:
    """Two digits when the original had a leading zero, or two digits in a numeric format."""
    return f"{value:02d}" if old[:1] == "0" or (padded and len(old) == 2) else str(value)


def _month_name(month: int, like: str) -> str:
    """The month's English name in the style of ``like`` (abbreviated or not, case)."""
    core = like.rstrip(".")
    full = MONTHS[month - 1]
    name = full[:3] if len(core) <= 3 or core.lower() == "sept" else full
    if core.isupper():
        return name.upper()
    return name.capitalize() if core[:1].isupper() else name


def _replace_spans(s: str, spans: list[tuple[int, int, str]]) -> str:
    for a, b, new in sorted(spans, reverse=True):
        s = s[:a] + new + s[b:]
    return s


def _date_of(key: str, s: str) -> tuple[date, list[tuple[int, int, str]], str] | None:
    """Parse a date match: (date, [(start, end, kind)] of its year/month/day parts, style)."""
    if key == "date_compact":
        d = _valid(int(s[:4]), int(s[4:6]), int(s[6:8]))
        return None if d is None else (d, [(0, 4, "Y"), (4, 6, "m"), (6, 8, "d")], "")
    runs = list(DIGITS.finditer(s))
    if key in ("date_sep", "date_kr", "date_yy"):
        y, m, dd = runs[0], runs[1], runs[2]
        year = int(y.group())
        if len(y.group()) == 2:
            year += 2000 if year < 50 else 1900
        d = _valid(year, int(m.group()), int(dd.group()))
        parts = [(y.start(), y.end(), "Y" if len(y.group()) == 4 else "y")]
        parts += [(m.start(), m.end(), "m"), (dd.start(), dd.end(), "d")]
        return None if d is None else (d, parts, "")
    if key == "date_dmy":
        a, b, y = runs[0], runs[1], runs[2]
        # US order (M/D/Y) when the first number can be a month, else D/M/Y.
        m, dd = (a, b) if int(a.group()) <= 12 else (b, a)
        d = _valid(int(y.group()), int(m.group()), int(dd.group()))
        parts = [(y.start(), y.end(), "Y"), (m.start(), m.end(), "m"), (dd.start(), dd.end(), "d")]
        return None if d is None else (d, parts, "")
    if key == "date_en":
        word = next(w for w in _ALPHA.finditer(s) if w.group()[:3].lower() in _MONTH_PREFIXES)
        days = [r for r in runs if len(r.group()) <= 2]
        years = [r for r in runs if len(r.group()) == 4]
        if not days:
            return None  # month and year only
        month = _MONTH_PREFIXES[word.group()[:3].lower()]
        d = _valid(int(years[0].group()), month, int(days[0].group()))
        parts = [(years[0].start(), years[0].end(), "Y"), (days[0].start(), days[0].end(), "d")]
        parts.append((word.start(), word.end(), "b"))
        return None if d is None else (d, parts, word.group())
    return None


_MONTH_PREFIXES = {m[:3]: i for i, m in enumerate(MONTHS, start=1)}


def shift(key: str, s: str, shift: Callable[[date], date]) -> str | None:
    """The date text shifted and formatted like the original; None for partial or bad dates."""
    parsed = _date_of(key, s)
    if parsed is None:
        return None
    old, parts, style = parsed
    new = shift(old)
    padded = key not in ("date_kr", "date_en")  # 2026년 12월 7일, Dec 7: no zero
    spans = []
    for a, b, what in parts:
        text = s[a:b]
        if what == "Y":
            spans.append((a, b, f"{new.year:04d}"))
        elif what == "y":
            spans.append((a, b, f"{new.year % 100:02d}"))
        elif what == "m":
            spans.append((a, b, _pad(text, new.month, padded)))
        elif what == "d":
            spans.append((a, b, _pad(text, new.day, padded)))
        else:
            spans.append((a, b, _month_name(new.month, style)))
    return _replace_spans(s, spans)


def _enough_digits(s: str) -> bool:
    return sum(ch.isdigit() for ch in s) >= 8


def _valid_partial(s: str) -> bool:
    """``M월 D일`` needs a month 1-12 (the regex lets 0 and 13-99 through)."""
    if "년" in s:
        return True
    month = int(DIGITS.findall(s)[0])
    return 1 <= month <= 12


# Matches the regex cannot judge alone; a failed check leaves the text as it was.
CHECKS: dict[str, Callable[[str], bool]] = {
    "ipv4": valid_ip,
    "ipv6": valid_ip,
    "ssn": _valid_ssn,
    "phone_intl": _enough_digits,
    "date_partial": _valid_partial,
}
