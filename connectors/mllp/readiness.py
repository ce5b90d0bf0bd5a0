"""Whether Kafka answers, known before anyone asks: /readyz must answer at once whatever the
broker does.

A metadata request to a broker that is down or hung takes its whole timeout (librdkafka waits
it out), so asking Kafka inside the /readyz handler made the answer as slow as the broker: a
probe with a 2-second client timeout saw no answer for as long as the broker was away. Here one
background task asks Kafka in a loop, one request at a time, and keeps the last verdict;
/readyz reads it and answers at once. The verdict is at most ``interval_s`` plus ``timeout_s``
old (with the defaults, /readyz said 503 about 4 s after the broker was killed or frozen).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

__all__ = ["KafkaWatch"]


class KafkaWatch:
    """The last verdict of ``probe(timeout_s)`` (True: the cluster answered), renewed every
    ``interval_s`` by a task of its own."""

    def __init__(
        self, probe: Callable[[float], bool], *, interval_s: float = 1.0, timeout_s: float = 2.0
    ) -> None:
        self._probe = probe
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._reachable: bool | None = None  # None: not asked yet
        self._down_since: float | None = None  # monotonic time of the first failed probe

    @property
    def reason(self) -> str | None:
        """Why Kafka does not count as reachable now, or None when it does."""
        if self._reachable is None:
            return "Kafka not checked yet"
        if self._reachable:
            return None
        down_s = time.monotonic() - (self._down_since or time.monotonic())
        return (
            f"Kafka did not answer a metadata request within {self._timeout_s:g} s "
            f"(unreachable for {down_s:.0f} s)"
        )

    async def start(self) -> None:
        """Ask once (at most ``timeout_s``), then keep asking in the background."""
        await self._check()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop asking, after the request in flight (at most ``timeout_s``): the producer it
        uses is closed next, and must not be closed under a call in another thread."""
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval_s)
                return
            await self._check()

    async def _check(self) -> None:
        # In a thread: the client call blocks for up to timeout_s.
        ok = await asyncio.to_thread(self._probe, self._timeout_s)
        if ok:
            self._down_since = None
        elif self._down_since is None:
            self._down_since = time.monotonic()
        self._reachable = ok
