"""The de-identification metrics: refusals by error code, blocked leaks, and policy actions by
action and PHI class. Counts only, never values.

The action counts are a collector that is not registered on import: the composition root
registers :data:`ACTIONS_DONE` where it builds a worker (``hl7bus worker``), so importing the
engine leaves the global registry alone.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import Counter
from prometheus_client.core import CounterMetricFamily

ERRORS = Counter(
    "hl7bus_deid_errors_total",
    "Events the de-identify stage refused (sent to the restricted DLQ), by error code.",
    ["code"],
)
LEAKS = Counter(
    "hl7bus_deid_leaks_total",
    "Events blocked because a source identifier was found in their de-identified form.",
)


class ActionCounts:
    """hl7bus_deid_actions_total{action, phi}: a plain dict added to per event and read at
    scrape time (a labelled Counter costs a lock per label and event, about 7 per event)."""

    def __init__(self) -> None:
        self.totals: dict[tuple[str, str], int] = {}

    def add(self, counts: Mapping[tuple[str, str], int]) -> None:
        totals = self.totals
        for label, n in counts.items():
            totals[label] = totals.get(label, 0) + n

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "hl7bus_deid_actions",
            "Policy actions applied to non-null field values, by action and the field's PHI class.",
            labels=["action", "phi"],
        )
        for (action, phi), n in sorted(self.totals.items()):
            family.add_metric([action, phi], n)
        yield family


#: The process's action counts (streams/steps.py adds to them per research event).
ACTIONS_DONE = ActionCounts()
