"""When a stream worker gives up on itself: the watchdog's rules, as a plain object.

faust can leave a worker hung after a rebalance (faust-streaming #74: table recovery waiting
for changelog records that never come; #629: partitions that stop fetching). /readyz reports
it; the watchdog ends it: the worker exits (streams/runtime.py, EXIT_STUCK) and its supervisor
starts it again, which reads the changelog and the committed offsets afresh. A hard exit is as
safe as a kill -9: only offsets of confirmed outputs were ever committed, and the uncommitted
tail is redone (sinks upsert).

The runtime feeds :meth:`Watchdog.check` what it sees every few seconds; this module decides.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field


@dataclass
class Watchdog:
    """Says why the worker is stuck, once it has been for ``limit_s`` seconds.

    Stuck means one of:
    - busy (a rebalance or table recovery going on) with no progress: the same rebalance and
      the same recovery position for the limit. A long recovery that keeps reading is not
      stuck, however long it takes;
    - a partition stalled for the limit (records waiting, none processed; the runtime asks
      streams/stage.Progress with the limit as timeout);
    - processed records of a partition waiting for an offset commit that has not moved for the
      limit (a crash would redo them all; a restart commits nothing new but starts clean).
    """

    limit_s: float
    _busy_since: float | None = field(default=None, init=False)
    _busy_at: Hashable = field(default=None, init=False)

    def check(
        self,
        now: float,
        busy: bool,
        position: Hashable,
        stalled: Sequence[str] = (),
        commit_stalled: Sequence[str] = (),
    ) -> str | None:
        """The reason to exit, or None. `now` is a monotonic clock; `position` anything that
        changes while a rebalance or recovery makes progress; `stalled` and `commit_stalled`
        name the partitions stuck for the limit."""
        if stalled:
            return (
                f"partition(s) {', '.join(stalled)} had records waiting and none processed for "
                f"{self.limit_s:.0f} s (stopped fetching)"
            )
        if commit_stalled:
            return (
                f"offset commits of partition(s) {', '.join(commit_stalled)} have not moved for "
                f"{self.limit_s:.0f} s"
            )
        if not busy:
            self._busy_since = None
            return None
        if self._busy_since is None or position != self._busy_at:
            self._busy_since, self._busy_at = now, position
            return None
        if now - self._busy_since > self.limit_s:
            return (
                f"rebalance or table recovery made no progress for {now - self._busy_since:.0f} s"
            )
        return None
