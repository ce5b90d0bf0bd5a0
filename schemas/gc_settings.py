"""Garbage collection for the long-running processes (the MLLP listener, the worker).

Both allocate many short-lived objects per message and almost none that form cycles. With
CPython's default threshold (700 allocations) the young generation was collected every few
messages: 15-20 % of the listener's CPU at 32 connections (BENCHMARKS.md, mllp), and in the
worker, whose batches keep their records' events and outputs alive until Kafka confirms them,
many collections per batch plus a full one every few thousand messages over every object of
faust and aiokafka (about 0.2 s of CPU per 2,000 messages; BENCHMARKS.md, worker). Here, below
every component, so that each process settles it the same way.
"""

from __future__ import annotations

import gc


def settle_gc() -> None:
    """Call once after start-up: what start-up made (modules, schemas, config, the app) is
    frozen out of every collection, and the young generation is collected less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
