"""scrub: free-text de-identification. Pure functions, no I/O.

Three steps (matching the message's own identifiers first is cheap and very effective;
patterns alone have modest recall):

1. :func:`identifiers_of` collects the message's own names and identifiers (every person, id,
   phone and address field of every segment) into an :class:`Identifiers` set;
   :func:`scrub_text` replaces every occurrence of them in the text (Hangul, Hanja and Latin
   script; case-insensitive; numbers tolerant of spaces, hyphens, dots and parentheses between
   digits; Hangul names followed by particles or honorifics, and in their romanized spellings:
   ``Kim Min-jun``, ``LEE, SEOYEON``, ``Choe Kyung-Min``). A surname used as an eponym
   (``Wilson's disease``, ``Allen test``) stays.
2. Names the message does not hold are found by their cues: titles and honorifics (교수,
   선생님, 님, 씨, Dr., Prof., Mr.), relationship words (딸, 보호자, wife, daughter), credentials
   and roles after a name (``, RN``, ``(daughter)``); Korean names with no cue by their shape
   (a surname, given-name syllables of a data file and a particle: ``송수빈에게``).
3. Patterns replace what any message may contain: Korean resident registration numbers, Korean
   and international phone numbers, US SSNs, e-mail addresses, URLs, IPv4/IPv6 addresses,
   labelled, long and alphanumeric record numbers, dates (or shifts them; also DD-Mon-YYYY and
   month/day without a year), ages over 89 (in words too), labelled postal codes, Korean road
   and apartment addresses, US street addresses.

Each replacement says what was removed (``[NAME]``, ``[ID]``, ``[RRN]``, ``[PHONE]``, ``[EMAIL]``,
``[URL]``, ``[IP]``, ``[DATE]``, ``[ADDRESS]``, ``[AGE 90+]``); :class:`ScrubResult` counts them
per :class:`Kind`, never values, for audit metrics. A US SSN is reported as ``[ID]``.

One job a module:

* :mod:`.identifiers` — what a message tells about its people (the fields read) and the
  :class:`Identifiers` value; :mod:`.collector` — how a value becomes needles;
* :mod:`.needles` — the needle rules (what is searched, how, what is too short) and the search
  tables of one identifier set; :mod:`.search` — finding and replacing them in a text;
* :mod:`.words` — word lists (titles, particles, common words, eponyms) and scripts;
* :mod:`.romanize` — Hangul names in Latin script; :mod:`.cues` — names found by their cues;
  :mod:`.shape` — Korean names found by their shape (``name_shape.yaml``);
* :mod:`.patterns` — the pattern rules; :mod:`.kinds` — what a replacement removed;
* :mod:`.step` — :func:`scrub_text` and :func:`clear_caches`.

Caches: needles per raw field value and search tables per identifier set are kept in bounded LRU
caches (they hold identifiers in process memory, like the messages themselves; never logged);
:func:`clear_caches` empties them.
"""

from __future__ import annotations

from .identifiers import Identifiers, identifiers_of
from .kinds import PLACEHOLDERS, Kind
from .patterns import ScrubOptions
from .step import DEFAULT_OPTIONS, ScrubResult, clear_caches, scrub_text
from .words import COMMON_WORDS, LATIN_COMMON_WORDS, PARTICLES, TITLES, eponym_at

__all__ = [
    "COMMON_WORDS",
    "DEFAULT_OPTIONS",
    "LATIN_COMMON_WORDS",
    "PARTICLES",
    "PLACEHOLDERS",
    "TITLES",
    "Identifiers",
    "Kind",
    "ScrubOptions",
    "ScrubResult",
    "clear_caches",
    "eponym_at",
    "identifiers_of",
    "scrub_text",
]
