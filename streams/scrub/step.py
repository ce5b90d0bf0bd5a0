"""The scrub step: a free text with the message's own identifiers and the names found by their
cues, then pattern matches, replaced; and the caches it keeps."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from typing import NamedTuple

from .cues import cue_spans
from .identifiers import Identifiers, field_needles
from .kinds import Kind
from .needles import spec, tables
from .patterns import ScrubOptions, apply_patterns
from .romanize import skeleton
from .search import identifier_spans, replace_spans
from .shape import shape_spans

__all__ = ["DEFAULT_OPTIONS", "ScrubResult", "clear_caches", "scrub_text"]


class ScrubResult(NamedTuple):
    text: str
    replacements: dict[Kind, int]  # kind -> count; kinds with no replacement are absent


DEFAULT_OPTIONS = ScrubOptions()


def scrub_text(
    text: str,
    identifiers: Identifiers | None = None,
    *,
    shift_date: Callable[[date], date] | None = None,
    options: ScrubOptions = DEFAULT_OPTIONS,
) -> ScrubResult:
    """Free text with the message's own identifiers and the names found by their cues, then
    pattern matches, replaced.

    ``shift_date`` (a date -> date function, e.g. the patient's consistent offset) shifts full
    dates instead of replacing them, keeping their format; partial dates (no year or no day) are
    always ``[DATE]``. Pure; raises only what ``shift_date`` raises.
    """
    counts: dict[Kind, int] = {}
    if not text or _too_short_to_identify(text):
        return ScrubResult(text, counts)
    spans = identifier_spans(text, tables(identifiers.needles)) if identifiers else []
    # Names the message does not hold, found by their cues (titles, relationship words), and
    # Korean ones with no cue by their shape (a surname, given-name syllables, a particle).
    names = cue_spans(text) + shape_spans(text)
    if names:
        spans += [(a, b, Kind.NAME) for a, b in names]
    if spans:
        text = replace_spans(text, spans, counts)
    text = apply_patterns(text, counts, shift_date, options)
    return ScrubResult(text, counts)


# A lab value such as 118, 5.4 or <0.5: at most 4 characters, each a digit or one of .,+-<>=,
# and not 4 digits. No needle fits in it (numbers and ids are searched from 5 digits, other
# literals from 4 letters or digits, names are letters: .needles) and no pattern matches it
# (each needs 5 or more digits, a letter, Hangul or a mark such as @: .patterns), so it is left
# as it is without searching. tests/test_scrub.py checks every such text against the patterns
# and against needles made to look like it.
_LAB_VALUE = re.compile(r"[0-9.,+\-<>=]{1,4}")


def _too_short_to_identify(text: str) -> bool:
    if len(text) > 4 or _LAB_VALUE.fullmatch(text) is None:
        return False
    return len(text) < 4 or not text.isdigit()


def clear_caches() -> None:
    """Forget cached field values, search tables and word skeletons (they hold identifiers and
    words of texts in memory; bounded LRU caches, cleared here e.g. between test cases or on a
    key rotation)."""
    field_needles.cache_clear()
    skeleton.cache_clear()
    tables.cache_clear()
    spec.cache_clear()
