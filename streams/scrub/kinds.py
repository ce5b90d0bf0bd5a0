"""What a replacement removed: the kinds of needles and patterns, and their placeholders."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["PLACEHOLDERS", "Kind"]


class Kind(StrEnum):
    """What a replacement removed; the keys of ``ScrubResult.replacements``."""

    NAME = "NAME"
    ID = "ID"
    RRN = "RRN"
    PHONE = "PHONE"
    EMAIL = "EMAIL"
    URL = "URL"
    IP = "IP"
    DATE = "DATE"
    ADDRESS = "ADDRESS"
    AGE = "AGE"


PLACEHOLDERS: dict[Kind, str] = {k: f"[{k.value}]" for k in Kind}
PLACEHOLDERS[Kind.AGE] = "[AGE 90+]"
