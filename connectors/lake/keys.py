"""Subject ids from the warehouse's key map: one identity for both sinks.

The lake resolves a patient's pseudonymous key exactly as the warehouse does
(connectors/warehouse/keymap.py, in the database and schema of the ``warehouse`` section), so
a MEDS subject_id is the OMOP person_id of the same patient, whichever sink saw the patient
first. On PostgreSQL both sinks run side by side; a DuckDB file admits one process at a time,
so with the embedded warehouse the lake sink cannot run while the warehouse sink holds it.

An A40 merge re-points the retired patient's key at the survivor in the key map (whichever
sink applies it first; keymap.alias_person). The lake's rows of the retired patient still carry
the old id, so the lake keeps, beside the key map, the id it last wrote for each patient key
(table `lake_subject` of the key-map schema): a merge finds the retired subject there even
after the warehouse has re-pointed the key.
"""

from __future__ import annotations

from collections.abc import Iterable

import duckdb

from hl7bus.connectors.lake.store import LakeError
from hl7bus.connectors.warehouse import keymap
from hl7bus.connectors.warehouse.changes import PERSON, Ref
from hl7bus.connectors.warehouse.config import WarehouseConfig
from hl7bus.connectors.warehouse.database import open_engine
from hl7bus.connectors.warehouse.engine import Engine, transaction

TABLE = "lake_subject"


class WarehouseKeys:
    def __init__(self, cfg: WarehouseConfig) -> None:
        self._cfg = cfg
        self._engine: Engine | None = None

    def open(self) -> None:
        try:
            self._engine = open_engine(self._cfg)
        except duckdb.IOException as exc:
            raise LakeError(
                f"cannot open the warehouse's key map in {self._cfg.path} "
                f"({str(exc).splitlines()[0][:120]}): a DuckDB warehouse serves one process at "
                "a time; stop the warehouse sink, or put both sinks on PostgreSQL (warehouse.url)"
            ) from exc
        engine = self._engine
        with transaction(engine):
            engine.execute(
                f"CREATE TABLE IF NOT EXISTS {engine.keys_table(TABLE)} ("
                " key_hash BIGINT NOT NULL PRIMARY KEY, id BIGINT NOT NULL)"
            )

    def resolve(self, refs: Iterable[Ref], retired: Iterable[Ref] = ()) -> dict[Ref, int]:
        """The id of every ref, new ones handed out, in one transaction. A `retired` ref (the
        merged-away patient of an A40) gets the id the lake last wrote for it, when it has
        one; every other person ref's id is recorded as the lake's."""
        engine = self._engine
        assert engine is not None
        wanted = list(refs)
        merged = set(retired)
        table = engine.keys_table(TABLE)
        with transaction(engine):
            ids = keymap.resolve(engine, [*wanted, *merged])
            hashes = {keymap.key_hash(ref): ref for ref in merged}
            if hashes:
                rows = engine.query(
                    f"SELECT key_hash, id FROM {table} WHERE {engine.any_id('key_hash')}",
                    [list(hashes)],
                )
                for key, id_ in rows:
                    ids[hashes[int(key)]] = int(id_)
            written = {
                keymap.key_hash(ref): ids[ref]
                for ref in wanted
                if ref.kind == PERSON and ref not in merged
            }
            if written:
                staged = engine.stage(table, ("key_hash", "id"), list(written.items()))
                engine.execute(
                    f"INSERT INTO {table} (key_hash, id) SELECT key_hash, id FROM {staged} "
                    "ON CONFLICT (key_hash) DO UPDATE SET id = excluded.id"
                )
            return ids

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None
