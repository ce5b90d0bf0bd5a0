"""Subject ids from the warehouse's key map: one identity for both sinks.

The lake resolves a patient's pseudonymous key exactly as the warehouse does
(connectors/warehouse/keymap.py, in the database and schema of the ``warehouse`` section), so
a MEDS subject_id is the OMOP person_id of the same patient, whichever sink saw the patient
first. On PostgreSQL both sinks run side by side; a DuckDB file admits one process at a time,
so with the embedded warehouse the lake sink cannot run while the warehouse sink holds it.
"""

from __future__ import annotations

from collections.abc import Iterable

import duckdb

from hl7bus.connectors.lake.store import LakeError
from hl7bus.connectors.warehouse import keymap
from hl7bus.connectors.warehouse.changes import Ref
from hl7bus.connectors.warehouse.config import WarehouseConfig
from hl7bus.connectors.warehouse.database import open_engine
from hl7bus.connectors.warehouse.engine import Engine, transaction


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

    def resolve(self, refs: Iterable[Ref]) -> dict[Ref, int]:
        """The id of every ref, new ones handed out, in one transaction."""
        assert self._engine is not None
        with transaction(self._engine):
            return keymap.resolve(self._engine, refs)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None
