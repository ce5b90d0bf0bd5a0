"""Backward compatibility of the event schemas with their last released versions.

"Backward compatible" is Avro's: a consumer holding the new schema (the reader) can decode data
written with the released one (the writer), by the resolution rules of the Avro specification
("Schema Resolution"): fields match by name (or reader alias); a reader field the writer lacks
needs a default; writer fields the reader lacks are skipped; types must match or be promotions
(int -> long, float, double; long -> float, double; float -> double; string <-> bytes); a writer
union resolves branch by branch; named types must keep their name; enum symbols may not go away
unless the reader enum has a default; fixed sizes must match. hl7bus adds one rule: the PHI class
of an existing field may not change (de-identification reads it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

Schema = Any  # JSON form of an Avro schema: str, list (union) or dict

_PROMOTIONS = {
    "int": {"long", "float", "double"},
    "long": {"float", "double"},
    "float": {"double"},
    "string": {"bytes"},
    "bytes": {"string"},
}
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


@dataclass(frozen=True)
class Problem:
    record: str
    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.record}: {self.where}: {self.what}"


def released_dir() -> Traversable:
    return resources.files(__package__).joinpath("released")


def current_dir() -> Traversable:
    return resources.files(__package__)


def load_dir(directory: Traversable | Path) -> dict[str, dict[str, Any]]:
    """Record name -> JSON schema of every *.avsc file directly in a directory."""
    found = {}
    for entry in directory.iterdir():
        if entry.name.endswith(".avsc"):
            definition = json.loads(entry.read_text(encoding="utf-8"))
            found[definition["name"]] = definition
    return found


def load_files(directory: Traversable | Path) -> dict[str, dict[str, Any]]:
    """File name -> JSON schema of every *.avsc file directly in a directory (research
    contracts, named <policy>.<type>.avsc, several per record type)."""
    if not directory.is_dir():
        return {}
    return {
        entry.name: json.loads(entry.read_text(encoding="utf-8"))
        for entry in directory.iterdir()
        if entry.name.endswith(".avsc")
    }


def _versions(root: Traversable | Path | None) -> list[Traversable | Path]:
    base = root if root is not None else released_dir()
    found = [e for e in base.iterdir() if e.is_dir() and e.name[1:].isdigit()]
    return sorted(found, key=lambda e: int(e.name[1:]))


def latest_release(root: Traversable | Path | None = None) -> tuple[str, dict[str, Any]] | None:
    """(version folder, schemas) of the newest release (v1, v2, ... by number)."""
    versions = _versions(root)
    if not versions:
        return None
    return versions[-1].name, load_dir(versions[-1])


def latest_research_release(
    root: Traversable | Path | None = None,
) -> tuple[str, dict[str, dict[str, Any]]] | None:
    """(version folder, file name -> contract) of the newest release that published research
    contracts (v<N>/research/<policy>.<type>.avsc)."""
    for version in reversed(_versions(root)):
        found = load_files(version.joinpath("research"))
        if found:
            return version.name, found
    return None


def check_research(
    current: dict[str, dict[str, Any]], released: dict[str, dict[str, Any]]
) -> list[Problem]:
    """Every released research contract (by file name) that its current one cannot read."""
    problems: list[Problem] = []
    for file, writer in sorted(released.items()):
        where = file.removesuffix(".avsc")
        reader = current.get(file)
        if reader is None:
            problems.append(Problem(where, "schema", "released research contract is gone"))
            continue
        problems += [Problem(where, p.where, p.what) for p in check({"R": reader}, {"R": writer})]
    return problems


def check_subject(new: Schema, registered: Schema) -> list[Problem]:
    """Every way in which `new` (a record, or a union of records such as hl7.events') cannot
    read data written with `registered`, record by record."""
    return check(_records(new), _records(registered))


def _records(schema: Schema) -> dict[str, Any]:
    branches = schema if isinstance(schema, list) else [schema]
    return {b["name"]: b for b in branches if isinstance(b, dict) and b.get("type") == "record"}


def check(current: dict[str, Any], released: dict[str, Any]) -> list[Problem]:
    """Every way in which `current` cannot read data written with `released`."""
    problems: list[Problem] = []
    for name, writer in sorted(released.items()):
        reader = current.get(name)
        if reader is None:
            problems.append(Problem(name, "schema", "released record type is gone"))
            continue
        _resolve(reader, writer, name, "", problems, _names(writer))
        _check_phi(reader, writer, name, problems)
    return problems


def _names(schema: Schema, found: dict[str, Any] | None = None) -> dict[str, Any]:
    """Named types (records, enums, fixed) of a schema by full and short name."""
    found = {} if found is None else found
    if isinstance(schema, list):
        for branch in schema:
            _names(branch, found)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "enum", "fixed"):
            found[schema["name"]] = schema
            found[schema["name"].rsplit(".", 1)[-1]] = schema
            for item in schema.get("fields", []):
                _names(item["type"], found)
        elif kind == "array":
            _names(schema["items"], found)
        elif kind == "map":
            _names(schema["values"], found)
        elif isinstance(kind, dict | list):
            _names(kind, found)
    return found


def _kind(schema: Schema, named: dict[str, Any]) -> tuple[str, Schema]:
    """(type name, expanded schema); references to named types are looked up."""
    if isinstance(schema, list):
        return "union", schema
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return schema, schema
        target = named.get(schema) or named.get(schema.rsplit(".", 1)[-1])
        return (target["type"], target) if target else ("unknown", schema)
    kind = schema["type"]
    if isinstance(kind, dict | list) or kind in _PRIMITIVES:
        return _kind(kind, named) if not isinstance(kind, str) else (kind, schema)
    return kind, schema


def _resolves(
    reader: Schema, writer: Schema, named_r: dict[str, Any], named_w: dict[str, Any]
) -> bool:
    problems: list[Problem] = []
    _resolve(reader, writer, "", "", problems, named_w, named_r)
    return not problems


def _resolve(
    reader: Schema,
    writer: Schema,
    record: str,
    where: str,
    problems: list[Problem],
    named_w: dict[str, Any],
    named_r: dict[str, Any] | None = None,
) -> None:
    named_r = named_r if named_r is not None else _names(reader)
    r_kind, r = _kind(reader, named_r)
    w_kind, w = _kind(writer, named_w)
    at = where or "(root)"
    if w_kind == "union":
        for branch in w:
            _resolve(reader, branch, record, where, problems, named_w, named_r)
        return
    if r_kind == "union":
        if not any(_resolves(branch, w, named_r, named_w) for branch in r):
            problems.append(Problem(record, at, f"writer type {w_kind} matches no reader branch"))
        return
    if r_kind != w_kind:
        if r_kind not in _PROMOTIONS.get(w_kind, set()):
            problems.append(Problem(record, at, f"type changed from {w_kind} to {r_kind}"))
        return
    named = r_kind in ("record", "enum", "fixed")
    if named and r["name"].rsplit(".", 1)[-1] != w["name"].rsplit(".", 1)[-1]:
        problems.append(Problem(record, at, f"{r_kind} renamed {w['name']} -> {r['name']}"))
        return
    if r_kind == "record":
        _resolve_record(r, w, record, where, problems, named_w, named_r)
    elif r_kind == "array":
        _resolve(r["items"], w["items"], record, f"{where}[]", problems, named_w, named_r)
    elif r_kind == "map":
        _resolve(r["values"], w["values"], record, f"{where}{{}}", problems, named_w, named_r)
    elif r_kind == "enum":
        missing = set(w["symbols"]) - set(r["symbols"])
        if missing and "default" not in r:
            problems.append(Problem(record, at, f"enum symbols removed: {sorted(missing)}"))
    elif r_kind == "fixed" and r["size"] != w["size"]:
        problems.append(Problem(record, at, f"fixed size changed {w['size']} -> {r['size']}"))


def _resolve_record(
    reader: dict[str, Any],
    writer: dict[str, Any],
    record: str,
    where: str,
    problems: list[Problem],
    named_w: dict[str, Any],
    named_r: dict[str, Any],
) -> None:
    written = {f["name"]: f for f in writer["fields"]}
    for field in reader["fields"]:
        path = f"{where}.{field['name']}" if where else field["name"]
        source = written.get(field["name"])
        if source is None:
            source = next((written[a] for a in field.get("aliases", []) if a in written), None)
        if source is None:
            if "default" not in field:
                problems.append(Problem(record, path, "new field without a default"))
            continue
        _resolve(field["type"], source["type"], record, path, problems, named_w, named_r)


def _check_phi(
    reader: dict[str, Any], writer: dict[str, Any], record: str, problems: list[Problem]
) -> None:
    before = {f["name"]: f.get("phi") for f in writer["fields"]}
    for field in reader["fields"]:
        old = before.get(field["name"])
        if old is not None and field.get("phi") != old:
            problems.append(
                Problem(
                    record, field["name"], f"PHI class changed from {old} to {field.get('phi')}"
                )
            )
