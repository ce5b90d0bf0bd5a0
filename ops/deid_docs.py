"""The de-identification profiles reference (docs/deid-profiles.md): each shipped profile,
field by field, with its rationale (the comment after each action in the YAML).

Committed, and a test (tests/test_deid_profiles.py) fails when it drifts.
"""

from __future__ import annotations

import re

from hl7bus.schemas import codec
from hl7bus.streams.deid import PROFILES, Policy, profile_text

_LINE = re.compile(r"^    (?P<field>\w+): (?P<action>[\w:]+)\s*(?:#\s*(?P<why>.*))?$")
_EVENT = re.compile(r"^  (?P<event>\w+):\s*(?:#.*)?$")


def profiles_markdown() -> str:
    """docs/deid-profiles.md: each shipped profile, field by field, with its rationale (the
    comment after each action in the YAML)."""
    out = [
        "# De-identification profiles",
        "",
        "Generated from `streams/policies/*.yaml` (the comment after each action is its",
        "rationale); regenerate with `HL7BUS_REGEN_DOCS=1 .venv/bin/pytest "
        "tests/test_deid_profiles.py`.",
        "Review a profile on real messages with `hl7bus deid FILE... --policy NAME`.",
        "Actions are described in `streams/deid/__init__.py`; a field a profile does not name is",
        "dropped: absent from the research contract (docs/events.md, Research contracts).",
        "",
    ]
    for name in PROFILES:
        policy = Policy.load(name)
        text = profile_text(name)
        head = []
        for line in text.splitlines():
            if not line.startswith("#"):
                break
            head.append(line[1:].strip())
        out += [f"## `{name}`", "", " ".join(h for h in head if h) or "", ""]
        low, high = policy.date_shift
        out += [
            f"Policy hash (stamped on research events as `deid_policy`): `{policy.digest}`. "
            f"Date shift: {low} to {high} days per patient. Dates in free text: "
            f"{policy.free_text_dates}.",
            "",
        ]
        event = None
        for line in text.splitlines():
            m_event = _EVENT.match(line)
            if m_event:
                event = m_event["event"]
                phi = codec.schema(event).phi_classes()
                out += [
                    f"### {name} / {event}",
                    "",
                    "| field | PHI | action | why |",
                    "|---|---|---|---|",
                ]
                continue
            m = _LINE.match(line)
            if m and event:
                why = (m["why"] or "").replace("|", "\\|")
                out.append(f"| `{m['field']}` | {phi[m['field']]} | `{m['action']}` | {why} |")
            elif event and line.strip() == "" and out[-1] != "":
                out.append("")
        if out[-1] != "":
            out.append("")
    return "\n".join(out).rstrip("\n") + "\n"
