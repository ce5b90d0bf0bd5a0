"""The OMOP standardized vocabulary of the warehouse: loading an OHDSI Athena download, mapping
source codes to concepts, and counting the codes that map to nothing.

What the sink calls (docs/omop-mapping.md, Vocabulary):

- ``VocabularyLookup(conn, dialect, schema)``: the ConceptLookup (concepts.py) over the loaded
  vocabulary tables; ``.map(system, code) -> Mapped``; ``.rebind(conn)`` after a reconnect.
  ``conn``: for DuckDB the sink's ``connection.cursor()``, for PostgreSQL a connection of its
  own in autocommit mode.
- ``UnmappedCounter``: ``.counted(feed, system, code, mapped)`` while mapping a batch, then
  ``record_unmapped(conn, dialect, counter.drain(), seen, schema)`` in the batch's transaction;
  the table comes from ``unmapped_table_statement(schema)``.

What the operator runs: ``hl7bus warehouse vocab load DIR`` (load_vocabulary) and
``hl7bus warehouse unmapped`` (top_unmapped).
"""

from pathlib import Path

from hl7bus.connectors.warehouse.vocabulary.athena import FILES, VocabularyError
from hl7bus.connectors.warehouse.vocabulary.load import (
    Loaded,
    load_duckdb,
    load_postgresql,
    load_vocabulary,
)
from hl7bus.connectors.warehouse.vocabulary.lookup import VocabularyLookup
from hl7bus.connectors.warehouse.vocabulary.unmapped import (
    UnmappedCode,
    UnmappedCounter,
    record_unmapped,
    top_unmapped,
)
from hl7bus.connectors.warehouse.vocabulary.unmapped import (
    create_statement as unmapped_table_statement,
)


def sample_folder() -> Path:
    """The small vocabulary shipped for tests and the demo (sample/, made by
    tests/vocabsample.py), in Athena's format."""
    return Path(__file__).resolve().parent / "sample"


__all__ = [
    "FILES",
    "Loaded",
    "UnmappedCode",
    "UnmappedCounter",
    "VocabularyError",
    "VocabularyLookup",
    "load_duckdb",
    "load_postgresql",
    "load_vocabulary",
    "record_unmapped",
    "sample_folder",
    "top_unmapped",
    "unmapped_table_statement",
]
