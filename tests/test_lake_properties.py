"""Compaction against a model (hypothesis): any sequence of batches of fact versions,
tombstones and merges, compacted after any of them, leaves the shards holding exactly each
fact's newest rows under its (merged) subject, one shard per subject, sorted by time."""

from __future__ import annotations

import tempfile
from datetime import datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lake_helpers import open_lake, subject_rows

from hl7bus.connectors.lake.check import check_lake
from hl7bus.connectors.lake.compaction import compact
from hl7bus.connectors.lake.mapping import Fact, LakeChanges, MedsRow
from hl7bus.connectors.lake.pending import PendingBatch
from hl7bus.connectors.warehouse.changes import PERSON, Ref

T0 = datetime(2025, 1, 1)

# One event: (subject, fact number, rows as (hour, value) or None for a tombstone, merged from).
events = st.tuples(
    st.integers(1, 6),
    st.integers(0, 8),
    st.one_of(st.none(), st.lists(st.tuples(st.integers(0, 48), st.integers(0, 9)), max_size=3)),
    st.one_of(st.none(), st.integers(1, 6)),
)
batches = st.lists(st.tuples(st.lists(events, min_size=1, max_size=6), st.booleans()), max_size=6)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches)
def test_compaction_keeps_every_facts_newest_rows(
    history: list[tuple[list[tuple[int, int, list[tuple[int, int]] | None, int | None]], bool]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "lake"
        store = open_lake(root)
        # The model: every fact's subject and newest rows. A fact's key names its subject, and
        # a retired subject's key names the survivor from then on, as the key map does.
        facts: dict[str, tuple[int, list[tuple[int, int]]]] = {}
        survivor_of: dict[int, int] = {}

        def current(subject: int) -> int:
            while subject in survivor_of:
                subject = survivor_of[subject]
            return subject

        for batch_events, compact_after in history:
            batch = PendingBatch()
            for position, (named, number, rows, merged_name) in enumerate(batch_events):
                subject = current(named)
                merged_from = current(merged_name) if merged_name is not None else None
                if merged_from == subject:
                    merged_from = None
                if merged_from is not None:
                    survivor_of[merged_from] = subject
                    for key, (owner, kept) in facts.items():
                        if owner == merged_from:
                            facts[key] = (subject, kept)
                fact = f"{subject}|{number}"
                if rows is None:
                    facts.pop(fact, None)
                else:
                    facts[fact] = (subject, rows)
                meds = tuple(
                    MedsRow(T0 + timedelta(hours=hour), f"X/{value}", float(value))
                    for hour, value in rows or []
                )
                changes = LakeChanges(Ref(PERSON, str(subject)), (Fact(Ref("f", fact), meds),))
                batch.add(position, subject, changes, "feed", f"e{position}", merged_from)
            store.append(batch.table(store.next_seq))
            if compact_after:
                compact(store)
        compact(store)

        expected: dict[int, list[tuple[datetime, str, float]]] = {}
        for subject, rows in facts.values():
            for hour, value in rows:
                expected.setdefault(subject, []).append(
                    (T0 + timedelta(hours=hour), f"X/{value}", float(value))
                )
        found = {
            subject: sorted((t, code, value) for t, code, value, _ in rows)
            for subject, rows in subject_rows(root).items()
        }
        assert found == {subject: sorted(rows) for subject, rows in expected.items() if rows}
        assert check_lake(root).problems == []
