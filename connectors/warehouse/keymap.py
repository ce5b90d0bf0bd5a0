"""The key map: (kind, pseudonymous source key) -> the integer id every OMOP table uses.

Ids are handed out by one sequence, so they are small, dense and never reused, and stay the
same for a source key forever (an A40 merge re-points the retired person's keys at the
survivor). The map lives in its own schema (`warehouse.keys_schema`), apart from the OMOP
tables: research users get the OMOP schema only (docs/architecture.md, Privacy).

Rows are found by a 63-bit hash of kind and key, an integer primary key: DuckDB reads an
integer column an order of magnitude faster than a pair of strings. The stored kind and key
guard against a hash collision.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from hl7bus.connectors.warehouse.changes import PERSON, Ref
from hl7bus.connectors.warehouse.engine import Engine, WarehouseDataError

TABLE = "key_map"
SEQUENCE = "surrogate_id"


def key_hash(ref: Ref) -> int:
    digest = hashlib.blake2b(f"{ref.kind}\x1f{ref.key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def create_statements(engine: Engine) -> list[str]:
    table, sequence = engine.keys_table(TABLE), engine.keys_table(SEQUENCE)
    return [
        f"CREATE SCHEMA IF NOT EXISTS {engine.keys_schema}",
        f"CREATE SEQUENCE IF NOT EXISTS {sequence}",
        f"CREATE TABLE IF NOT EXISTS {table} ("
        " key_hash BIGINT NOT NULL PRIMARY KEY,"
        " kind VARCHAR(20) NOT NULL,"
        " source_key TEXT NOT NULL,"
        " id BIGINT NOT NULL)",
    ]


class KeyCollision(WarehouseDataError):
    """Two source keys with one hash: the event is sent to the DLQ (never seen in practice)."""

    def __init__(self) -> None:
        super().__init__("key_collision")


def resolve(engine: Engine, refs: Iterable[Ref], fresh: set[int] | None = None) -> dict[Ref, int]:
    """The id of every ref, handing out new ids for refs never seen (inside the caller's
    transaction: a rolled-back batch leaves no new keys). `fresh` receives the ids this call
    handed out: no row of any table can have one yet, so the writer appends their rows instead
    of merging them."""
    wanted = {key_hash(ref): ref for ref in set(refs)}
    if not wanted:
        return {}
    table = engine.keys_table(TABLE)
    found: dict[Ref, int] = {}
    rows = engine.query(
        f"SELECT key_hash, kind, source_key, id FROM {table} WHERE {engine.any_id('key_hash')}",
        [list(wanted)],
    )
    _collect(rows, wanted, found)
    missing = [(h, ref.kind, ref.key) for h, ref in wanted.items() if ref not in found]
    if missing:
        staged = engine.stage(table, ("key_hash", "kind", "source_key"), missing)
        sequence = engine.keys_table(SEQUENCE)
        # ON CONFLICT: another sink process may have added the same key meanwhile.
        # RETURNING names the rows this statement inserted (not those another process added
        # meanwhile): their ids are new to every table. The others are read back.
        inserted = engine.query(
            f"INSERT INTO {table} (key_hash, kind, source_key, id) "
            f"SELECT key_hash, kind, source_key, nextval('{sequence}') FROM {staged} "
            "ON CONFLICT (key_hash) DO NOTHING RETURNING key_hash, kind, source_key, id"
        )
        _collect(inserted, wanted, found)
        if fresh is not None:
            fresh.update(int(row[3]) for row in inserted)
        rest = [h for h, _, _ in missing if wanted[h] not in found]
        if rest:
            rows = engine.query(
                f"SELECT key_hash, kind, source_key, id FROM {table} "
                f"WHERE {engine.any_id('key_hash')}",
                [rest],
            )
            _collect(rows, wanted, found)
    return found


def _collect(rows: list[tuple[Any, ...]], wanted: dict[int, Ref], found: dict[Ref, int]) -> None:
    for key, kind, source_key, id_ in rows:
        ref = wanted[int(key)]
        if (kind, source_key) != (ref.kind, ref.key):
            raise KeyCollision()
        found[ref] = int(id_)


def alias_person(engine: Engine, retired: int, survivor: int) -> None:
    """After an A40: every source key of the retired person now names the survivor."""
    engine.execute(
        f"UPDATE {engine.keys_table(TABLE)} SET id = %s WHERE kind = %s AND id = %s",
        [survivor, PERSON, retired],
    )
