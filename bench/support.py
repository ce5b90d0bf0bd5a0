"""Helpers the benchmarks share: bulk loads of their input topics."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def produce_all(
    producer: Any,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes]],
    headers: list[tuple[str, str | bytes | None]] | None = None,
) -> None:
    """Write (key, value) records with a plain confluent Producer, waiting for room whenever
    librdkafka's local queue is full, then flush; raise if any is not delivered in 60 s."""
    for key, value in records:
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=headers)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    if producer.flush(60):
        raise RuntimeError(f"{topic}: records not delivered within 60 s")
