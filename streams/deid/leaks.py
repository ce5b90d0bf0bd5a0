"""The leak check: the research form of an event is searched for the source event's direct
identifiers and its message's names and ids (normalized for case, spaces and punctuation); a
hit refuses the event."""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from hl7bus.schemas import codec
from hl7bus.streams.deid.errors import DeidError
from hl7bus.streams.deid.fields import CARRIER, phi_classes
from hl7bus.streams.scrub import COMMON_WORDS, LATIN_COMMON_WORDS, Identifiers, eponym_at

_NOISE = re.compile(r"[\s\-_.,()/|^~&\\]+")
_HANGUL = re.compile("[\uac00-\ud7a3\u3400-\u4dbf\u4e00-\u9fff]")


def _normalized(value: str) -> str:
    return _NOISE.sub("", value).casefold()


# Output values recur (codes, units, kept texts): normalized once each. Like the other caches
# here it holds event values in process memory, never logged.
normalized_value = lru_cache(maxsize=65536)(_normalized)


def _worth_searching(text: str) -> bool:
    """A needle long and specific enough that finding it is a leak, not a coincidence."""
    if _HANGUL.search(text):
        return len(text) >= 3 or (len(text) == 2 and text not in COMMON_WORDS)
    if text.isdigit():
        return len(text) >= 5
    return len(text) >= 4 and text.upper() not in LATIN_COMMON_WORDS


@lru_cache(maxsize=64)
def _direct_fields(event_type: str) -> tuple[str, ...]:
    return tuple(n for n, c in phi_classes(event_type).items() if c == "direct" and n != CARRIER)


@lru_cache(maxsize=64)
def _nested_direct(event_type: str) -> dict[str, tuple[str, ...]]:
    """Array-of-record fields -> the names of their direct string members."""
    out: dict[str, tuple[str, ...]] = {}
    for f in codec.schema(event_type).definition["fields"]:
        for branch in f["type"] if isinstance(f["type"], list) else [f["type"]]:
            items = branch.get("items") if isinstance(branch, dict) else None
            if isinstance(items, dict) and items.get("type") == "record":
                out[f["name"]] = tuple(
                    s["name"]
                    for s in items["fields"]
                    if s.get("phi") == "direct"
                    and "string" in str(s["type"])
                    and "array" not in str(s["type"])
                )
    # Named types used again by reference (e.g. merged_from_identifiers: PatientIdentifier).
    for f in codec.schema(event_type).definition["fields"]:
        for branch in f["type"] if isinstance(f["type"], list) else [f["type"]]:
            items = branch.get("items") if isinstance(branch, dict) else None
            if isinstance(items, str):
                short = items.rsplit(".", 1)[-1]
                for g in codec.schema(event_type).definition["fields"]:
                    for b in g["type"] if isinstance(g["type"], list) else [g["type"]]:
                        inner = b.get("items") if isinstance(b, dict) else None
                        if isinstance(inner, dict) and inner.get("name") == short:
                            out[f["name"]] = out[g["name"]]
    return out


@lru_cache(maxsize=1024)
def _carried_needles(ids: Identifiers) -> tuple[str, ...]:
    out = {_normalized(v) for _, v in ids.needles}
    return tuple(sorted(n for n in out if _worth_searching(n)))


def check_leaks(
    event_type: str,
    source: dict[str, Any],
    output: Iterable[str],
    carried: Identifiers | None = None,
    released: frozenset[str] = frozenset(),
) -> None:
    """Raise when a direct-identifier value of the source event, or a name or identifier of its
    message (``carried``), appears in the output text (normalized for case, spaces, hyphens).

    ``released``: normalized values of quasi-identifiers the policy releases on purpose (the
    limited profile keeps the city, which is also one of the message's address needles)."""
    # The separator is not a noise character, so no needle can match across two fields, and
    # normalizing each text before joining them is the same as normalizing the joined text.
    texts = output if isinstance(output, list | tuple) else tuple(output)
    haystack = "\x00".join(map(normalized_value, texts))
    if not haystack.strip("\x00"):
        return
    nested = _nested_direct(event_type)
    for name in _direct_fields(event_type):
        value = source.get(name)
        if value is None:
            continue
        if isinstance(value, str):
            found = [value]
        elif isinstance(value, list):
            # Records of identifiers: their direct string members (an id, not its type code).
            subs = nested.get(name, ())
            found = [
                item[s] for item in value if isinstance(item, dict) for s in subs if item.get(s)
            ]
        else:
            continue
        for text in found:
            needle = normalized_value(text)
            if len(needle) >= 2 and needle in haystack:
                raise DeidError(
                    f"leak check: the value of {event_type}.{name} is in the output", "leak"
                )
    if carried:
        needles = _carried_needles(carried)
        if not any(map(haystack.__contains__, needles)):  # the usual case, searched in C
            return
        for needle in needles:
            if needle in haystack and needle not in released and not _eponyms_only(needle, texts):
                raise DeidError(
                    f"leak check: a name or identifier of the {event_type}'s message is in "
                    "the output",
                    "leak",
                )


def _eponyms_only(needle: str, texts: Iterable[str]) -> bool:
    """A Latin surname found only as an eponym's (the patient Wilson, the output's "Wilson's
    disease", which the scrubber keeps on purpose) is no leak."""
    if not (needle.isascii() and needle.isalpha()):
        return False
    word = re.compile(rf"(?<![A-Za-z]){re.escape(needle)}(?![A-Za-z])", re.IGNORECASE)
    found = False
    for text in texts:
        for m in word.finditer(text):
            if not eponym_at(text, m.end()):
                return False
            found = True
    return found


def collect(values: Iterable[Any], haystack: list[str], released: set[str] | None) -> None:
    """Output strings into the leak search's haystack (nested ones too); released quasi values
    into ``released``."""
    for value in values:
        if isinstance(value, str):
            haystack.append(value)
            if released is not None:
                released.add(normalized_value(value))
        elif isinstance(value, list | dict):
            _strings(value, haystack)


def _strings(value: Any, into: list[str]) -> None:
    if isinstance(value, str):
        into.append(value)
    elif isinstance(value, list):
        for item in value:
            _strings(item, into)
    elif isinstance(value, dict):
        for item in value.values():
            _strings(item, into)
