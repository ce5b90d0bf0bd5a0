"""Which feeds each person's events came from: `hl7bus warehouse check` counts rows per feed by it.

No OMOP column says which feed a row came from (the source keys are pseudonyms), so the writer
notes (person_id, feed) for every event it writes, in the same transaction. It lives in the key
map's schema (`warehouse.keys_schema`), beside the map research users are not granted. A person
whose events come from two feeds counts for both.
"""

from __future__ import annotations

from collections.abc import Collection

from hl7bus.connectors.warehouse.engine import Engine

TABLE = "person_feed"


def create_statement(engine: Engine) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {engine.keys_table(TABLE)} ("
        " person_id BIGINT NOT NULL,"
        " feed TEXT NOT NULL,"
        " PRIMARY KEY (person_id, feed))"
    )


def record(engine: Engine, pairs: Collection[tuple[int, str]]) -> None:
    """Note the (person_id, feed) pairs of a batch; those already noted stay as they are."""
    if not pairs:
        return
    table = engine.keys_table(TABLE)
    staged = engine.stage(table, ("person_id", "feed"), sorted(pairs))
    engine.execute(
        f"INSERT INTO {table} (person_id, feed) SELECT person_id, feed FROM {staged} "
        "ON CONFLICT (person_id, feed) DO NOTHING"
    )


def move(engine: Engine, retired: int, survivor: int) -> None:
    """After an A40: the retired person's feeds are the survivor's."""
    table = engine.keys_table(TABLE)
    engine.execute(
        f"INSERT INTO {table} (person_id, feed) SELECT %s, feed FROM {table} "
        "WHERE person_id = %s ON CONFLICT (person_id, feed) DO NOTHING",
        [survivor, retired],
    )
    engine.execute(f"DELETE FROM {table} WHERE person_id = %s", [retired])
