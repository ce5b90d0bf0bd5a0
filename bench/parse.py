"""``hl7bus bench parse``: HL7 v2 parsing throughput, ours against named peers.

Two workloads on the same messages (17-segment ORU^R01 from their bytes):

* ``mapper`` (issue 3's workload a): parse, then read the fields an event mapper reads
  (streams/map_results.py and the shared mapping Context: MSH-7/9/10/18, PID-3/5/7/8,
  PV1-19, ORC-2/3, OBR-4/7 and per OBX 2/3/5/6/7/8/11/14; :data:`HEADER_PATHS`,
  :data:`OBX_PATHS`), each library in its own idiom;
* ``walk`` (workload b): parse, then read every field value of every segment.

Contenders, measured in the same run on the same messages:

* ``hl7bus`` — :func:`hl7bus.hl7v2.parse`, then ``Message.get`` / ``Segment.get``;
* ``python-hl7`` — ``hl7.parse`` (splits everything up front), then its ``SEG.Fn.Rn.Cn``
  paths, ``extract_field`` and ``str(segment[n])``;
* ``hl7apy`` — ``parse_message`` with tolerant validation and group finding (its
  normal use), then the element tree by name and ``to_er7()``; slow, so it gets fewer
  messages (``--hl7apy-messages``) and the same time budget;
* ``str.split`` — splitting segments and fields (and the components a path names) only:
  the floor, no parser can beat it.

The contenders take turns in interleaved rounds (``rounds``), each with the same share
of the time budget, so load from other processes hits them alike; ``ratio_range``
gives the ratio of the slowest and of the fastest round. ``targets`` checks issue 3's
targets (:data:`TARGETS`).

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

import hl7
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from hl7bus.hl7v2 import parse

SEGMENTS = 17
HL7APY_MESSAGES = 20


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


# -- workload (a): the fields an event mapper reads ------------------------------------
#
# What streams/map_results.py and the shared Context read of an ORU^R01 (message time, type,
# control id and charset; patient key and demographics; the encounter key; placer and filler
# numbers; the order code and time; per OBX its value type, code, value, units, range, flags,
# status and time), each library in its own idiom. Every reader returns the values in the same
# order; tests/test_bench_parse.py checks that all four agree on the corpus.

#: Accesses of the mapper workload besides the OBX ones, and per OBX segment.
HEADER_PATHS = (
    *("MSH-7.1", "MSH-9.1", "MSH-9.2", "MSH-10", "MSH-18"),
    *("PID-3.1", "PID-3.4", "PID-5.1", "PID-5.2", "PID-7.1", "PID-8", "PV1-19.1", "PV1-19.4"),
    *("ORC-2.1", "ORC-3.1", "OBR-4.1", "OBR-4.2", "OBR-7.1"),
)
OBX_PATHS = ("2", "3.1", "5", "6.1", "7", "8", "11", "14.1")

Values = list[str | None]
Reader = Callable[[bytes], Values]


def read_hl7bus(data: bytes) -> Values:
    msg = parse(data)
    get = msg.get
    out: Values = [
        get("MSH-7.1"),
        get("MSH-9.1"),
        get("MSH-9.2"),
        get("MSH-10"),
        get("MSH-18"),
        get("PID-3.1"),
        get("PID-3.4"),
        get("PID-5.1"),
        get("PID-5.2"),
        get("PID-7.1"),
        get("PID-8"),
        get("PV1-19.1"),
        get("PV1-19.4"),
        get("ORC-2.1"),
        get("ORC-3.1"),
        get("OBR-4.1"),
        get("OBR-4.2"),
        get("OBR-7.1"),
    ]
    for obx in msg.segments("OBX"):
        get = obx.get
        out += (
            get("2"),
            get("3.1"),
            get("5"),
            get("6.1"),
            get("7"),
            get("8"),
            get("11"),
            get("14.1"),
        )
    return out


def read_python_hl7(data: bytes) -> Values:
    # python-hl7's own path syntax (SEG.Fn.Rn.Cn, decoded, first segment of that id) for the
    # header, Segment.extract_field for the OBX loop; str(field) for whole fields, as
    # extract_field would stop at the first component of a composite (OBX-5 "<^0.1").
    msg = hl7.parse(data, encoding="utf-8")
    try:
        pv1 = msg.segment("PV1")  # optional in ORU^R01; python-hl7 raises KeyError
    except KeyError:
        pv1 = None
    out: Values = [
        msg["MSH.F7.R1.C1"],
        msg["MSH.F9.R1.C1"],
        msg["MSH.F9.R1.C2"],
        msg["MSH.F10"],
        msg["MSH.F18"],
        msg["PID.F3.R1.C1"],
        msg["PID.F3.R1.C4"],
        msg["PID.F5.R1.C1"],
        msg["PID.F5.R1.C2"],
        msg["PID.F7.R1.C1"],
        msg["PID.F8"],
        pv1.extract_field(1, 19, 1, 1) if pv1 else None,
        pv1.extract_field(1, 19, 1, 4) if pv1 else None,
        msg["ORC.F2.R1.C1"],
        msg["ORC.F3.R1.C1"],
        msg["OBR.F4.R1.C1"],
        msg["OBR.F4.R1.C2"],
        msg["OBR.F7.R1.C1"],
    ]
    for obx in msg.segments("OBX"):
        get = obx.extract_field
        out += (
            get(1, 2),
            get(1, 3, 1, 1),
            str(obx[5]),
            get(1, 6, 1, 1),
            get(1, 7),
            get(1, 8),
            get(1, 11),
            get(1, 14, 1, 1),
        )
    return out


def read_hl7apy(data: bytes) -> Values:
    # hl7apy's idiom: the message tree by group and element names (ORU_R01 of 2.5.1).
    msg = parse_message(data.decode("utf-8"), validation_level=VALIDATION_LEVEL.TOLERANT)
    msh = msg.msh
    result = msg.oru_r01_patient_result
    patient = result.oru_r01_patient
    pid = patient.pid
    pv1 = patient.oru_r01_visit.pv1
    order = result.oru_r01_order_observation
    orc, obr = order.orc, order.obr
    out: Values = [
        msh.msh_7.msh_7_1.to_er7(),
        msh.msh_9.msh_9_1.to_er7(),
        msh.msh_9.msh_9_2.to_er7(),
        msh.msh_10.to_er7(),
        msh.msh_18.to_er7(),
        pid.pid_3.pid_3_1.to_er7(),
        pid.pid_3.pid_3_4.to_er7(),
        pid.pid_5.pid_5_1.to_er7(),
        pid.pid_5.pid_5_2.to_er7(),
        pid.pid_7.pid_7_1.to_er7(),
        pid.pid_8.to_er7(),
        pv1.pv1_19.pv1_19_1.to_er7(),
        pv1.pv1_19.pv1_19_4.to_er7(),
        orc.orc_2.orc_2_1.to_er7(),
        orc.orc_3.orc_3_1.to_er7(),
        obr.obr_4.obr_4_1.to_er7(),
        obr.obr_4.obr_4_2.to_er7(),
        obr.obr_7.obr_7_1.to_er7(),
    ]
    for observation in order.oru_r01_observation:
        obx = observation.obx
        out += (
            obx.obx_2.to_er7(),
            obx.obx_3.obx_3_1.to_er7(),
            obx.obx_5.to_er7(),
            obx.obx_6.obx_6_1.to_er7(),
            obx.obx_7.to_er7(),
            obx.obx_8.to_er7(),
            obx.obx_11.to_er7(),
            obx.obx_14.obx_14_1.to_er7(),
        )
    return out


def read_str_split(data: bytes) -> Values:
    # The floor: split into segments and fields, index, split components where a path has
    # one; no escapes, no checks, the delimiters hard-coded. The split of an MSH is one
    # short of HL7 numbering (MSH-1 is the separator).
    found: dict[str, list[str]] = {}
    obxs = []
    for seg in data.decode("utf-8").split("\r"):
        if seg[:3] == "OBX":
            obxs.append(seg.split("|"))
        elif seg:
            found.setdefault(seg[:3], seg.split("|"))
    msh, pid, orc, obr = found["MSH"], found["PID"], found["ORC"], found["OBR"]
    pv1 = found.get("PV1")  # optional in ORU^R01
    msh9 = msh[8].split("^")
    pid3 = pid[3].split("~", 1)[0].split("^")
    pid5 = pid[5].split("~", 1)[0].split("^")
    pv119 = pv1[19].split("^") if pv1 else [None, None, None, None]
    obr4 = obr[4].split("^")
    out: Values = [
        msh[6].split("^", 1)[0],
        msh9[0],
        msh9[1],
        msh[9],
        msh[17],
        pid3[0],
        pid3[3],
        pid5[0],
        pid5[1],
        pid[7].split("^", 1)[0],
        pid[8],
        pv119[0],
        pv119[3],
        orc[2].split("^", 1)[0],
        orc[3].split("^", 1)[0],
        obr4[0],
        obr4[1],
        obr[7].split("^", 1)[0],
    ]
    for f in obxs:
        out += (
            f[2],
            f[3].split("^", 1)[0],
            f[5],
            f[6].split("^", 1)[0],
            f[7],
            f[8],
            f[11],
            f[14].split("^", 1)[0],
        )
    return out


READERS: dict[str, Reader] = {
    "hl7bus": read_hl7bus,
    "python-hl7": read_python_hl7,
    "hl7apy": read_hl7apy,
    "str.split": read_str_split,
}


# -- workload (b): a full walk of every field value -------------------------------------


def walk_hl7bus(data: bytes) -> int:
    msg = parse(data)
    n = 0
    for seg in msg.segments():
        for f in range(1, len(seg.fields)):
            seg.get(str(f))
            n += 1
    return n


def walk_python_hl7(data: bytes) -> int:
    msg = hl7.parse(data, encoding="utf-8")
    n = 0
    for seg in msg:
        for f in range(1, len(seg)):
            str(seg[f])
            n += 1
    return n


def walk_hl7apy(data: bytes) -> int:
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


Walk = Callable[[bytes], int]

WALKERS: dict[str, Walk] = {
    "hl7bus": walk_hl7bus,
    "python-hl7": walk_python_hl7,
    "hl7apy": walk_hl7apy,
    "str.split": walk_str_split,
}

CONTENDERS = tuple(WALKERS)


def _counted(read: Reader) -> Walk:
    def walk(data: bytes) -> int:
        return len(read(data))

    walk.__name__ = read.__name__
    return walk


#: workload name -> contender -> bytes in, number of values read out.
WORKLOADS: dict[str, dict[str, Walk]] = {
    "mapper": {name: _counted(read) for name, read in READERS.items()},
    "walk": WALKERS,
}

DESCRIPTIONS = {
    "mapper": f"parse + the fields an event mapper reads of a {SEGMENTS}-segment ORU^R01 "
    f"({len(HEADER_PATHS)} header/patient/order accesses + {len(OBX_PATHS)} per OBX)",
    "walk": f"parse + read every field of a {SEGMENTS}-segment ORU^R01",
}

#: Issue 3's targets: (workload, peer) -> minimum of hl7bus / peer (messages/s).
TARGETS: dict[tuple[str, str], float] = {
    ("mapper", "hl7apy"): 50.0,
    ("mapper", "python-hl7"): 10.0,
    ("mapper", "str.split"): 0.25,
    ("walk", "python-hl7"): 5.0,
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
) -> tuple[dict[str, dict[str, dict[str, Any]]], list[dict[str, dict[str, float]]]]:
    """Every (workload, contender) gets ``seconds / rounds`` in each of ``rounds`` rounds,
    in turn, so a burst of load on a shared machine hits all of them alike. Returns the
    totals per workload and contender, and the messages/s of each round."""
    for contenders in WORKLOADS.values():
        for name, walk in contenders.items():
            walk(corpora[name][0])  # warm up imports and caches
    totals = {w: {name: [0, 0, 0.0] for name in CONTENDERS} for w in WORKLOADS}
    per_round: list[dict[str, dict[str, float]]] = []
    for _ in range(rounds):
        this: dict[str, dict[str, float]] = {w: {} for w in WORKLOADS}
        for workload, contenders in WORKLOADS.items():
            for name, walk in contenders.items():
                done, fields, elapsed = measure(walk, corpora[name], seconds / rounds)
                t = totals[workload][name]
                t[0], t[1], t[2] = t[0] + done, t[1] + fields, t[2] + elapsed
                this[workload][name] = done / elapsed
        per_round.append(this)
    results = {
        workload: {
            name: {
                "messages_per_s": round(done / elapsed, 1),
                "messages": int(done),
                "seconds": round(elapsed, 3),
                "values_per_message": round(fields / done, 1),
            }
            for name, (done, fields, elapsed) in by_name.items()
        }
        for workload, by_name in totals.items()
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


def loadavg() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (/proc/loadavg), None where there is none."""
    try:
        with open("/proc/loadavg", encoding="ascii") as fh:
            return [float(x) for x in fh.read().split()[:3]]
    except (OSError, ValueError):
        return None


def run(
    messages: int = 200,
    seconds: float = 2.0,
    hl7apy_messages: int = HL7APY_MESSAGES,
    rounds: int = 5,
) -> dict[str, Any]:
    """The benchmark as a JSON-ready dict (see the module docstring). ``seconds`` is the
    time budget of each contender in each workload, spread over ``rounds`` interleaved
    rounds."""
    from importlib.metadata import version

    data = corpus(messages)
    few = data[: max(1, min(hl7apy_messages, len(data)))]
    assert all(len(parse(d)) == SEGMENTS for d in data[:5])
    rounds = max(1, rounds)
    corpora = {name: few if name == "hl7apy" else data for name in CONTENDERS}
    load_before = loadavg()
    started = time.perf_counter()
    results, per_round = interleaved(corpora, seconds, rounds)
    elapsed = time.perf_counter() - started
    peers = [name for name in CONTENDERS if name != "hl7bus"]
    workloads: dict[str, Any] = {}
    for workload, figures in results.items():
        ours = figures["hl7bus"]["messages_per_s"]
        workloads[workload] = {
            "description": DESCRIPTIONS[workload],
            "results": figures,
            "ratios": {
                f"hl7bus/{name}": round(ours / figures[name]["messages_per_s"], 3) for name in peers
            },
            # The ratio in the slowest and the fastest round: how much to trust the figure.
            "ratio_range": {
                f"hl7bus/{name}": [
                    round(min(r[workload]["hl7bus"] / r[workload][name] for r in per_round), 3),
                    round(max(r[workload]["hl7bus"] / r[workload][name] for r in per_round), 3),
                ]
                for name in peers
            },
        }
    targets = {}
    for (workload, peer), minimum in TARGETS.items():
        ratio = workloads[workload]["ratios"][f"hl7bus/{peer}"]
        targets[f"{workload}: hl7bus/{peer}"] = {
            "min": minimum,
            "ratio": ratio,
            "worst_round": workloads[workload]["ratio_range"][f"hl7bus/{peer}"][0],
            "met": ratio >= minimum,
        }
    return {
        "benchmark": "parse",
        "command": (
            f"hl7bus bench parse --messages {messages} --seconds {seconds:g}"
            f" --hl7apy-messages {hl7apy_messages} --rounds {rounds}"
        ),
        "machine": machine(),
        "loadavg": {"before": load_before, "after": loadavg()},
        "versions": {"python-hl7": version("hl7"), "hl7apy": version("hl7apy")},
        "params": {
            "messages": len(data),
            "hl7apy_messages": len(few),
            "seconds": seconds,
            "rounds": rounds,
        },
        "workloads": workloads,
        "targets": targets,
        "all_targets_met": all(t["met"] for t in targets.values()),
        "elapsed_s": round(elapsed, 1),
    }


def profile(messages: int = 200, top: int = 25) -> str:
    """cProfile of hl7bus in both workloads over the corpus (for `--profile`)."""
    import cProfile
    import io
    import pstats

    data = corpus(messages)
    out = io.StringIO()
    for title, work in (("mapper", read_hl7bus), ("walk", walk_hl7bus)):
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(5):
            for d in data:
                work(d)
        prof.disable()
        out.write(f"== workload {title}: {work.__name__} ==\n")
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
