"""Where a subject lives in the lake: its split and its shard, both fixed by its id (pure).

The split is a keyed hash of the subject id (HMAC-SHA256 with `lake.split_key`) read as a
fraction and cut at the configured ratios, so it is deterministic, needs no table to look up,
and cannot be steered by anyone without the key. The shard within the split is another slice
of the same hash. A subject therefore always lands in the same one shard, and compaction only
rewrites the shards whose subjects changed (docs/ai-sink.md, Layout).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

TRAIN, TUNING, HELD_OUT = "train", "tuning", "held_out"  # meds.train_split, ...
SPLITS = (TRAIN, TUNING, HELD_OUT)


@dataclass(frozen=True)
class Layout:
    split_key: bytes
    ratios: tuple[float, float, float]  # train, tuning, held_out; they sum to 1
    shards_per_split: int

    def place(self, subject_id: int) -> tuple[str, int]:
        """(split, shard number within the split) of a subject."""
        digest = hmac.new(self.split_key, subject_id.to_bytes(8, "big", signed=True), "sha256")
        raw = digest.digest()
        fraction = int.from_bytes(raw[:8], "big") / 2**64
        train, tuning, _ = self.ratios
        if fraction < train:
            split = TRAIN
        elif fraction < train + tuning:
            split = TUNING
        else:
            split = HELD_OUT
        return split, int.from_bytes(raw[8:16], "big") % self.shards_per_split

    def shard_path(self, subject_id: int) -> str:
        split, number = self.place(subject_id)
        return shard_name(split, number)

    def fingerprint(self) -> str:
        """What a lake's layout is made of, without the key itself: a lake keeps the layout it
        was made with (a changed one would move subjects between shards and splits)."""
        key_id = hashlib.sha256(b"hl7bus-lake-split\x00" + self.split_key).hexdigest()[:16]
        ratios = ",".join(f"{ratio:.6f}" for ratio in self.ratios)
        return f"key={key_id};ratios={ratios};shards={self.shards_per_split}"


def shard_name(split: str, number: int) -> str:
    """A shard's path under the lake root: data/<split>/<n>.parquet."""
    return f"data/{split}/{number}.parquet"
