"""Structure validation of a message against its HL7 version, by hl7apy.

Off the hot path: hl7apy parses a 17-segment ORU^R01 at a few dozen messages per
second, so it is imported here, lazily, and only when :func:`validate` is called.

hl7apy knows the message structures, segment definitions, datatypes, tables and
lengths of every version from 2.1 to 2.8.2; we delegate all of that to it. What we
add is the shape of the answer: hl7apy's ``Message.validate()`` raises on the first
error and puts values into its texts (``Value 홍길동 not in table ...``), so the walk
over its element tree is redone here with the same rules as
``hl7apy.validation.Validator.validate`` (occurrences of every child, children
allowed, datatypes, table values, maximum lengths), and every problem becomes a
:class:`Finding` that names *where* (segment id, field, component) and *what*,
never the value. Findings go to logs and ERR segments; PHI must not (docs/architecture.md,
Privacy).

Levels:

``"tolerant"``
    hl7apy parses tolerantly; structural errors only (missing required segments
    and fields, unexpected or repeated children, wrong datatypes, unknown
    elements).
``"strict"``
    also hl7apy's strict parse (whose first refusal is reported, after which the
    walk goes on over the tolerant parse so every problem is still listed) and the
    warnings: values outside their HL7 table, values over the maximum length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from .errors import Hl7ParseError
from .message import Message, parse

__all__ = ["LEVELS", "Finding", "Level", "validate"]

Level = Literal["tolerant", "strict"]
LEVELS: tuple[Level, ...] = ("tolerant", "strict")

_POSITION = re.compile(r"_(\d+)$")

# hl7apy exceptions whose text names structures, never values.
_SAFE_TEXT = frozenset(
    {
        "ChildNotFound",
        "ChildNotValid",
        "InvalidEncodingChars",
        "InvalidName",
        "MaxChildLimitReached",
        "MessageProfileNotFound",
        "OperationNotAllowed",
        "UnsupportedVersion",
    }
)


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem. ``segment`` is a segment id (``"PID"``) or None for the message
    as a whole, ``field`` and ``component`` are 1-based positions or None.
    ``problem`` never contains a value from the message."""

    severity: Literal["error", "warning"]
    segment: str | None
    field: int | None
    component: int | None
    problem: str

    @property
    def location(self) -> str:
        """``PID-3.4``, ``PV1``, or ``message``."""
        if self.segment is None:
            return "message"
        where = self.segment
        if self.field is not None:
            where += f"-{self.field}"
            if self.component is not None:
                where += f".{self.component}"
        return where

    def __str__(self) -> str:
        return f"{self.severity}: {self.location}: {self.problem}"


def validate(
    message: Message | bytes | str, level: Level = "tolerant", *, version: str | None = None
) -> list[Finding]:
    """Check ``message`` against the structures of its HL7 version (MSH-12, or
    ``version``) with hl7apy. Returns the findings, ``[]`` when valid; never raises
    for problems in the message (a message that does not even parse gives one
    finding). ``level`` is ``"tolerant"`` or ``"strict"`` (ValueError otherwise)."""
    if level not in LEVELS:
        raise ValueError(f"validation level must be one of {', '.join(LEVELS)}, not {level!r}")
    if not isinstance(message, Message):
        try:
            message = parse(message)
        except Hl7ParseError as exc:
            return [Finding("error", None, None, None, f"not an HL7 message: {exc.reason}")]

    from hl7apy import VALIDATION_LEVEL  # hl7apy stays off the hot path

    findings: list[Finding] = []
    ver = version or message.version
    if not ver:
        return [Finding("error", "MSH", 12, None, "no HL7 version (MSH-12): cannot validate")]
    if not _supported(ver):
        return [Finding("error", "MSH", 12, None, f"HL7 version {ver} is not known to hl7apy")]
    er7 = _er7_for_hl7apy(message, version)
    if level == "strict":
        try:
            _hl7apy_parse(er7, VALIDATION_LEVEL.STRICT)
        except Exception as exc:
            findings.append(_from_exception(exc, "refused by the strict parse"))
    try:
        tree = _hl7apy_parse(er7, VALIDATION_LEVEL.TOLERANT)
    except Exception as exc:
        findings.append(_from_exception(exc, "hl7apy cannot parse the message"))
        return findings
    walker = _Walker(with_warnings=level == "strict")
    try:
        walker.walk(tree, None)
    except Exception as exc:  # an hl7apy bug on odd input must not take the caller down
        walker.findings.append(_from_exception(exc, "hl7apy failed while validating"))
    findings.extend(walker.findings)
    return findings


def _supported(version: str) -> bool:
    from hl7apy import SUPPORTED_LIBRARIES

    return version in SUPPORTED_LIBRARIES


def _er7_for_hl7apy(message: Message, version: str | None) -> str:
    if version is not None and version != message.version:
        copy = parse(message.to_er7())
        copy.set("MSH-12", version)
        message = copy
    return message.to_er7()


def _hl7apy_parse(er7: str, level: int) -> Any:
    from hl7apy.parser import parse_message

    return parse_message(er7, validation_level=level, find_groups=True)


def _from_exception(exc: Exception, what: str) -> Finding:
    name = type(exc).__name__
    detail = f"{name}: {exc}" if name in _SAFE_TEXT else name
    return Finding("error", None, None, None, f"{what} ({detail})")


def _position(name: str | None) -> int | None:
    m = _POSITION.search(name or "")
    return int(m.group(1)) if m else None


class _Walker:
    """The rules of ``hl7apy.validation.Validator.validate``, collecting findings."""

    def __init__(self, *, with_warnings: bool) -> None:
        self.with_warnings = with_warnings
        self.findings: list[Finding] = []

    def add(self, severity: Literal["error", "warning"], el: Any, problem: str) -> None:
        if severity == "warning" and not self.with_warnings:
            return
        segment, field, component = _locate(el)
        self.findings.append(Finding(severity, segment, field, component, problem))

    def walk(self, el: Any, ref: Any) -> None:
        if el.is_unknown():
            self.add("error", el, "element not defined for this version")
            return
        if el.is_z_element():
            self._z_element(el)
            return
        self._known(el, ref)

    def _z_element(self, el: Any) -> None:
        from hl7apy import load_reference
        from hl7apy.core import is_base_datatype

        if el.classname == "Field":
            if is_base_datatype(el.datatype, el.version) or el.datatype == "varies":
                return
            if el.datatype is not None:
                struct = load_reference(el.datatype, "Datatypes_Structs", el.version)
                self._known(el, ("sequence", struct, el.datatype, None, None, -1))
        for child in el.children:
            self.walk(child, None)

    def _known(self, el: Any, ref: Any) -> None:
        from hl7apy import load_reference
        from hl7apy.core import is_base_datatype
        from hl7apy.exceptions import ChildNotFound

        if ref is None:
            try:
                ref = load_reference(el.name, el.classname, el.version)
            except ChildNotFound:
                self.add("error", el, f"{el.classname.lower()} not defined for this version")
                return
        if ref[0] in ("sequence", "choice"):
            present = {c.name for c in el.children if not c.is_z_element()}
            allowed = {c[0] for c in ref[1]}
            extra = present - allowed
            for name in sorted(n for n in extra if n):
                self.add("error", el, f"{_label(name)} is not allowed in {_label(el.name)}")
            if None in extra:
                self.add("error", el, f"more elements than {_label(el.name)} defines")
            for child_ref in ref[1]:
                name, (least, most) = child_ref[0], child_ref[2]
                try:
                    children = el.children.get(name)
                except Exception:  # hl7apy's reference files lack some elements
                    continue
                count = len(children)
                if count < least:
                    self._missing(el, name)
                elif most != -1 and count > most:
                    self.add(
                        "error",
                        children[most],
                        f"{_label(name)} occurs {count} times, at most {most}",
                    )
                for child in children:
                    self.walk(child, child_ref[1])
            for child in el.children:
                if child.is_z_element():
                    self.walk(child, None)
            return
        table, max_length = ref[4], ref[5]
        if table is not None and self.with_warnings:
            self._table(el, table)
        if -1 < max_length < len(el.to_er7()):
            self.add("warning", el, f"longer than the maximum length {max_length}")
        if el.datatype == "varies":
            return
        if el.datatype != ref[2]:
            self.add("error", el, f"datatype {el.datatype}, expected {ref[2]}")
        if not is_base_datatype(el.datatype, el.version) and el.datatype is not None:
            struct = load_reference(el.datatype, "Datatypes_Structs", el.version)
            self._known(el, struct)

    def _missing(self, parent: Any, name: str) -> None:
        pos = _position(name)
        segment, field, component = _locate(parent)
        if parent.classname in ("Message", "Group"):
            segment, field, component = (name if len(name) == 3 else None), None, None
            what = (
                f"required segment {name} is missing"
                if len(name) == 3
                else (f"required group {name} is missing")
            )
        elif parent.classname == "Segment":
            field, what = pos, "required field is missing"
        else:
            component, what = pos, "required component is missing"
        self.findings.append(Finding("error", segment, field, component, what))

    def _table(self, el: Any, table: str) -> None:
        from hl7apy import load_reference
        from hl7apy.exceptions import ChildNotFound

        try:
            values = load_reference(table, "Table", el.version)[1]
        except ChildNotFound:
            return
        if el.to_er7() not in values:
            self.add("warning", el, f"value not in HL7 table {table}")


def _label(name: str) -> str:
    """``PID_3`` -> ``PID-3``, ``CX_4`` -> component 4, group names unchanged."""
    m = re.fullmatch(r"([A-Z][A-Z0-9]{2})_(\d+)(?:_(\d+))?", name)
    if m is None:
        return name
    seg, field, comp = m.groups()
    return f"{seg}-{field}" + (f".{comp}" if comp else "")


def _locate(el: Any) -> tuple[str | None, int | None, int | None]:
    """Segment id, field and component of an hl7apy element, walking up its parents."""
    segment = field = component = None
    node = el
    while node is not None:
        kind = node.classname
        if kind == "Component" and component is None:
            component = _position(node.name)
        elif kind == "Field" and field is None:
            field = _position(node.name)
        elif kind == "Segment":
            segment = node.name
            break
        elif kind in ("Group", "Message"):
            break
        node = node.parent
    return segment, field, component
