"""``hl7bus bench parse``: HL7 v2 parsing throughput, ours against named peers.

Workload: parse one 17-segment ORU^R01 from its bytes and read every field value of
every segment (a full walk), the work of a stream processor that maps a whole
message. Contenders, measured in the same run on the same messages:

* ``hl7bus`` — :func:`hl7bus.hl7v2.parse`, then ``Segment.get(n)`` for every field;
* ``python-hl7`` — ``hl7.parse`` (splits everything up front), then ``str(segment[n])``;
* ``hl7apy`` — ``parse_message`` with tolerant validation and group finding (its
  normal use), then ``field.to_er7()`` for every field of every segment; slow, so it
  gets fewer messages (``--hl7apy-messages``) and the same time budget;
* ``str.split`` — splitting segments and fields only: the floor, no parser can beat it.

The contenders take turns in interleaved rounds (``rounds``), each with the same share
of the time budget, so load from other processes hits them alike; ``ratio_range``
gives the ratio of the slowest and of the fastest round.

The corpus is the ORU^R01 messages of the bundled sample feed
(ops/demo/sample-feed.hl7: Korean UTF-8 text, 2.5.1), each brought to exactly 17
segments by cycling its result segments (OBX/NTE) after the OBR. Machines are shared
and noisy: read the ratios, not the absolute figures (BENCHMARKS.md).
"""

from __future__ import annotations

import gc
import json
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

SEGMENTS = 17
HL7APY_MESSAGES = 20

Walk = Callable[[bytes], int]


def corpus(count: int) -> list[bytes]:
    """``count`` 17-segment ORU^R01 messages (bytes, ``\\r``-terminated), cycled from
    the sample feed's ORU^R01 messages."""
    from hl7bus.hl7v2 import parse_batch
    from hl7bus.ops.demo_run import sample_feed_path

    oru = [m for m in parse_batch(sample_feed_path().read_bytes()) if m.message_type == "ORU^R01"]
    base = []
    for msg in oru:
        segs = msg.to_er7().split("\r")[:-1]
        names = [s[:3] for s in segs]
        if "OBR" not in names:
            continue
        head = segs[: names.index("OBR") + 1]
        results = segs[len(head) :]
        if not results:
            continue
        body = [results[i % len(results)] for i in range(SEGMENTS - len(head))]
        base.append(("\r".join(head + body) + "\r").encode("utf-8"))
    if not base:
        raise RuntimeError("the sample feed has no ORU^R01 with results")
    return [base[i % len(base)] for i in range(max(1, count))]


# -- the contenders: bytes in, number of field values read out ------------------------


def walk_hl7bus(data: bytes) -> int:
    from hl7bus.hl7v2 import parse

    msg = parse(data)
    n = 0
    for seg in msg.segments():
        for f in range(1, len(seg.fields)):
            seg.get(str(f))
            n += 1
    return n


def walk_python_hl7(data: bytes) -> int:
    import hl7

    msg = hl7.parse(data, encoding="utf-8")
    n = 0
    for seg in msg:
        for f in range(1, len(seg)):
            str(seg[f])
            n += 1
    return n


def walk_hl7apy(data: bytes) -> int:
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message

    msg = parse_message(data.decode("utf-8"), validation_level=VALIDATION_LEVEL.TOLERANT)
    n = 0
    stack = list(msg.children)
    while stack:
        node = stack.pop()
        if node.classname == "Segment":
            for field in node.children:
                field.to_er7()
                n += 1
        else:
            stack.extend(node.children)
    return n


def walk_str_split(data: bytes) -> int:
    text = data.decode("utf-8")
    n = 0
    for seg in text.split("\r"):
        if seg:
            n += len(seg.split("|")) - 1
    return n


CONTENDERS: dict[str, Walk] = {
    "hl7bus": walk_hl7bus,
    "python-hl7": walk_python_hl7,
    "hl7apy": walk_hl7apy,
    "str.split": walk_str_split,
}


def measure(walk: Walk, messages: Sequence[bytes], seconds: float) -> tuple[int, int, float]:
    """Passes over ``messages`` until ``seconds`` have gone by (at least one pass):
    (messages done, fields read, seconds elapsed)."""
    gc.collect()
    done = fields = 0
    start = time.perf_counter()
    while True:
        for data in messages:
            fields += walk(data)
        done += len(messages)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done, fields, elapsed


def interleaved(
    corpora: Mapping[str, Sequence[bytes]], seconds: float, rounds: int
) -> tuple[dict[str, dict[str, Any]], list[dict[str, float]]]:
    """Every contender gets ``seconds / rounds`` in each of ``rounds`` rounds, in turn,
    so a burst of load on a shared machine hits all of them alike. Returns the totals
    per contender and the messages/s of each round."""
    for name, walk in CONTENDERS.items():
        walk(corpora[name][0])  # warm up imports and caches
    totals = {name: [0, 0, 0.0] for name in CONTENDERS}
    per_round: list[dict[str, float]] = []
    for _ in range(rounds):
        this: dict[str, float] = {}
        for name, walk in CONTENDERS.items():
            done, fields, elapsed = measure(walk, corpora[name], seconds / rounds)
            t = totals[name]
            t[0], t[1], t[2] = t[0] + done, t[1] + fields, t[2] + elapsed
            this[name] = done / elapsed
        per_round.append(this)
    results = {
        name: {
            "messages_per_s": round(done / elapsed, 1),
            "messages": int(done),
            "seconds": round(elapsed, 3),
            "fields_per_message": round(fields / done, 1),
        }
        for name, (done, fields, elapsed) in totals.items()
    }
    return results, per_round


def machine() -> dict[str, Any]:
    cpu = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu": cpu,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }


def run(
    messages: int = 200,
    seconds: float = 2.0,
    hl7apy_messages: int = HL7APY_MESSAGES,
    rounds: int = 5,
) -> dict[str, Any]:
    """The benchmark as a JSON-ready dict (see the module docstring). ``seconds`` is the
    time budget of each contender, spread over ``rounds`` interleaved rounds."""
    from importlib.metadata import version

    from hl7bus.hl7v2 import parse

    data = corpus(messages)
    few = data[: max(1, min(hl7apy_messages, len(data)))]
    assert all(len(parse(d)) == SEGMENTS for d in data[:5])
    rounds = max(1, rounds)
    corpora = {name: few if name == "hl7apy" else data for name in CONTENDERS}
    results, per_round = interleaved(corpora, seconds, rounds)
    ours = results["hl7bus"]["messages_per_s"]
    peers = [name for name in CONTENDERS if name != "hl7bus"]
    return {
        "benchmark": "parse",
        "workload": f"parse + read every field of a {SEGMENTS}-segment ORU^R01",
        "machine": machine(),
        "versions": {"python-hl7": version("hl7"), "hl7apy": version("hl7apy")},
        "params": {
            "messages": len(data),
            "hl7apy_messages": len(few),
            "seconds": seconds,
            "rounds": rounds,
        },
        "results": results,
        "ratios": {
            f"hl7bus/{name}": round(ours / results[name]["messages_per_s"], 2) for name in peers
        },
        # The ratio in the slowest and the fastest round: how much to trust the figure.
        "ratio_range": {
            f"hl7bus/{name}": [
                round(min(r["hl7bus"] / r[name] for r in per_round), 2),
                round(max(r["hl7bus"] / r[name] for r in per_round), 2),
            ]
            for name in peers
        },
    }


def profile(messages: int = 200, top: int = 25) -> str:
    """cProfile of the hl7bus walk over the corpus (for `--profile`)."""
    import cProfile
    import io
    import pstats

    data = corpus(messages)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(5):
        for d in data:
            walk_hl7bus(d)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
