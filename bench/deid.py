"""``hl7bus bench deid``: the de-identify stage against parse+normalize, in the same run.

Corpus: the ORU^R01 messages of the bundled sample feed (ops/demo/sample-feed.hl7), each with
one extra free-text NTE of about 300 characters that names the patient, a relative's phone,
the attending doctor, an RRN, the MRN and dates (built from the message's own PID/PV1 values,
as a clinician would write it).

Contenders, the real stage functions of streams/steps.py on the same messages, timed in CPU
seconds of this process (per core):

* ``parse_normalize`` — :func:`parse_step`: decode the RawMessage, parse, map to typed events,
  normalize, encode each event (this includes computing the message's identifiers for the
  ``message_identifiers`` carrier: see ``carrier`` below);
* ``deidentify`` — what de-identification adds to a worker that runs both stages (the default):
  ``parse_normalize_deidentify``, the fused :func:`parse_step` (which calls
  :func:`research_output` on every event as it holds it in memory: the policy with pseudonyms,
  date shifts, scrubbing of every free-text field with the carried identifiers and the leak
  check, then the Avro encode of the research form), minus ``parse_normalize``.
  ``deidentify_in_memory`` times :func:`research_output` alone on events built once and reused
  pass after pass: cheaper than the difference (warm hashes, fewer allocations), shown beside it;
* ``research_only`` — the fused :func:`parse_step` with ``identified=False``
  (``worker.identified_output: false``): no identified encode, no hl7.events outputs;
* ``deidentify_stage`` — :func:`deidentify_step` on every encoded event: the stage on its own
  over hl7.events (a worker running only it), which decodes each event first.

``deid_engine`` / ``deid_encode`` / ``deid_decode`` split de-identification into the policy
engine (:func:`deidentify`, with and without the leak check), the Avro encode of the research
events with their research contracts and (the separate stage only) the Avro decode of the
identified events; ``deid_encode_identified`` is the same encode with the identified schemas
(the dropped fields written as nulls), as research events were encoded before the contracts.
``carrier`` measures ``identifiers_of`` alone (the part of parse_normalize that exists only for
de-identification), so the report can say what de-identification costs with and without it.
``warm``: steady state (the scrubber's LRU caches of field needles and search tables hold the
corpus's patients and doctors, as in a live feed where they recur); ``cold``: every cache
cleared before each message (a feed where no patient or doctor ever repeats).

Target (issue 6): de-identification costs at most 50 % of parse+normalize time.
"""

from __future__ import annotations

import cProfile
import gc
import io
import os
import platform
import pstats
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from hl7bus.hl7v2 import Message, parse, parse_batch
from hl7bus.schemas import codec
from hl7bus.streams import deid, scrub
from hl7bus.streams.deid import engine as deid_engine
from hl7bus.streams.deid import leaks as deid_leaks
from hl7bus.streams.deid.contract import research_schema
from hl7bus.streams.parse import events_from_raw
from hl7bus.streams.steps import (
    DeidSettings,
    Output,
    deidentify_step,
    parse_step,
    research_output,
)

SEOUL = ZoneInfo("Asia/Seoul")
TARGET = 0.5


def _note(message: Message) -> str:
    family = message.get("PID-5.1") or "홍"
    given = message.get("PID-5.2") or "길동"
    mrn = message.get("PID-3.1") or "12345678"
    doctor = (message.get("PV1-7.2") or "김") + (message.get("PV1-7.3") or "철수")
    note = (
        f"{family}{given} 환자 2026-03-01 외래 내원 후 채혈함. "
        "보호자(배우자) 연락처 010-2345-6789, "
        f"주치의 {doctor} 교수에게 결과 보고. 등록번호 {mrn}, 주민번호 800101-1234567 확인. "
        f"Pt {given} reports fatigue since 02/20/2026; repeat CBC in 2 weeks. "
        "Specimen slightly hemolyzed, potassium may be falsely elevated. "
        "재검 요망, 결과 이상 시 병동 02-2072-1234 로 연락 바람."
    )
    return note.replace("|", " ")


def corpus(count: int) -> list[bytes]:
    """``count`` RawMessage values (encoded) of ORU^R01 messages with a free-text NTE."""
    from hl7bus.ops.demo_run import sample_feed_path

    oru = [m for m in parse_batch(sample_feed_path().read_bytes()) if m.message_type == "ORU^R01"]
    out = []
    for n in range(count):
        message = oru[n % len(oru)]
        text = message.to_bytes().decode("utf-8").rstrip("\r")
        text += f"\rNTE|1|L|{_note(message)}"
        raw = text.encode("utf-8")
        parsed = parse(raw)
        out.append(
            codec.encode(
                "RawMessage",
                {
                    "schema_version": 1,
                    "feed": "bench",
                    "received_at": datetime(2026, 3, 5, 3, 0, tzinfo=UTC),
                    "peer": "127.0.0.1:1",
                    "charset": "utf-8",
                    "control_id": f"{parsed.control_id}-{n}",
                    "message_type": parsed.message_type,
                    "patient_key": None,
                    "raw": raw,
                },
            )
        )
    return out


def _clear() -> None:
    scrub.clear_caches()
    deid_engine._identifiers.cache_clear()
    deid_leaks._carried_needles.cache_clear()
    deid_engine._own.cache_clear()
    deid_leaks.normalized_value.cache_clear()


def _timed(work: Callable[[], int], budget: float) -> tuple[float, int, int]:
    """(CPU seconds, passes, items) of repeated passes of ``work`` within ``budget`` CPU seconds
    (>= 1 pass). CPU time of this process, not wall time: the figures are per core, and other
    processes on a shared machine do not stretch them."""
    gc.collect()
    passes = items = 0
    started = time.process_time()
    while True:
        items += work()
        passes += 1
        elapsed = time.process_time() - started
        if elapsed >= budget:
            return elapsed, passes, items


def run(
    messages: int = 100,
    seconds: float = 1.0,
    rounds: int = 3,
    policy_ref: str = "kr-pseudonym",
    profile: bool = False,
) -> dict[str, Any]:
    values = corpus(messages)
    policy = deid.Policy.load(policy_ref)
    key = deid.Pseudonymizer(b"bench-key-0123456789abcdef012345", "bench")
    settings = DeidSettings(policy, key, leak_check=True)
    identified: list[list[Output]] = [parse_step(None, v, SEOUL) for v in values]
    events = [o.value for outs in identified for o in outs]
    # The events in memory, as the parse stage holds them when it de-identifies (fused).
    in_memory = [
        list(zip(events_from_raw(codec.decode(v)[1], SEOUL), outs, strict=True))
        for v, outs in zip(values, identified, strict=True)
    ]
    parsed_messages = [parse(codec.decode(v)[1]["raw"]) for v in values]
    # Sanity: everything reaches research (no leak alarm, no error) before timing anything.
    outcomes = [deidentify_step(e, policy, key, True)[0].topic_id for e in events]
    refused = sum(1 for t in outcomes if not t.startswith("research."))
    texts = sum(
        1
        for e in events
        for f in ("notes", "value_text", "text", "description", "reaction")
        if codec.decode(e)[1].get(f)
    )

    def parse_all() -> int:
        for v in values:
            parse_step(None, v, SEOUL)
        return len(values)

    def fused_all() -> int:
        for v in values:
            parse_step(None, v, SEOUL, settings)
        return len(values)

    def research_only_all() -> int:
        for v in values:
            parse_step(None, v, SEOUL, settings, identified=False)
        return len(values)

    def deid_all() -> int:
        for pairs in in_memory:
            for event, out in pairs:
                research_output(event.type, event.record, out.value, settings)
        return len(events)

    def stage_all() -> int:
        for e in events:
            deidentify_step(e, policy, key, True)
        return len(events)

    def carrier_all() -> int:
        for m in parsed_messages:
            scrub.identifiers_of(m)
        return len(parsed_messages)

    def cold(work: Callable[[Any], Any], items: list[Any]) -> Callable[[], int]:
        def go() -> int:
            for item in items:
                _clear()
                work(item)
            return len(items)

        return go

    decoded = [codec.decode(e) for e in events]
    research = [deid.deidentify(et, r, policy, key, True) for et, r in decoded]

    def decode_all() -> int:
        for e in events:
            codec.decode(e)
        return len(events)

    def engine(leak_check: bool) -> Callable[[], int]:
        def go() -> int:
            for et, r in decoded:
                deid.deidentify(et, r, policy, key, leak_check, counts={})
            return len(events)

        return go

    def encode_all() -> int:
        for (et, _), r in zip(decoded, research, strict=True):
            codec.encode(et, r, writer=research_schema(policy, et))
        return len(events)

    def encode_identified() -> int:
        for (et, _), r in zip(decoded, research, strict=True):
            codec.encode(et, r)
        return len(events)

    contenders: dict[str, Callable[[], int]] = {
        "parse_normalize": parse_all,
        "parse_normalize_deidentify": fused_all,
        "research_only": research_only_all,
        "deidentify_in_memory": deid_all,
        "deidentify_stage": stage_all,
        "carrier": carrier_all,
        "deid_decode": decode_all,
        "deid_engine": engine(True),
        "deid_engine_no_leak_check": engine(False),
        "deid_encode": encode_all,
        "deid_encode_identified": encode_identified,
        "parse_normalize_cold": cold(lambda v: parse_step(None, v, SEOUL), values),
        "deidentify_cold": cold(
            lambda pairs: [research_output(e.type, e.record, o.value, settings) for e, o in pairs],
            in_memory,
        ),
    }
    totals = {name: [0.0, 0] for name in contenders}
    ratios: list[float] = []
    share = seconds / rounds
    for _ in range(rounds):
        round_s: dict[str, float] = {}
        for name, work in contenders.items():
            elapsed, passes, _ = _timed(work, share)
            totals[name][0] += elapsed
            totals[name][1] += passes
            round_s[name] = elapsed / passes
        parse_s = round_s["parse_normalize"]
        ratios.append((round_s["parse_normalize_deidentify"] - parse_s) / parse_s)
    _clear()

    def per_pass(name: str) -> float:
        elapsed, passes = totals[name]
        return elapsed / passes

    def us_per_message(name: str) -> float:
        return round(per_pass(name) / n_msg * 1e6, 1)

    p, c = per_pass("parse_normalize"), per_pass("carrier")
    # What de-identification adds to the deployed parse stage: the fused step minus parse alone.
    d = per_pass("parse_normalize_deidentify") - p
    pc, dc = per_pass("parse_normalize_cold"), per_pass("deidentify_cold")
    n_msg, n_ev = len(values), len(events)
    ratio = d / p
    report = {
        "benchmark": "deid",
        "policy": {"name": policy.name, "hash": policy.digest},
        "corpus": {
            "messages": n_msg,
            "events": n_ev,
            "events_per_message": round(n_ev / n_msg, 2),
            "free_text_fields": texts,
            "note_chars": len(_note(parsed_messages[0])),
            "refused_events": refused,
        },
        "per_core": {
            "parse_normalize_messages_per_s": round(n_msg / p, 1),
            "parse_normalize_events_per_s": round(n_ev / p, 1),
            "deidentify_events_per_s": round(n_ev / d, 1),
            "parse_normalize_us_per_message": us_per_message("parse_normalize"),
            "deidentify_us_per_message": round(d / n_msg * 1e6, 1),
            "parse_normalize_deidentify_us_per_message": us_per_message(
                "parse_normalize_deidentify"
            ),
            "research_only_us_per_message": us_per_message("research_only"),
            "deidentify_in_memory_us_per_message": us_per_message("deidentify_in_memory"),
            "deidentify_stage_us_per_message": us_per_message("deidentify_stage"),
            "carrier_identifiers_of_us_per_message": round(c / n_msg * 1e6, 1),
        },
        "deid_over_parse_normalize": round(ratio, 3),
        "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
        "in_memory_over_parse_normalize": round(per_pass("deidentify_in_memory") / p, 3),
        "stage_over_parse_normalize": round(per_pass("deidentify_stage") / p, 3),
        "deid_plus_carrier_over_parse_normalize_without_it": round((d + c) / (p - c), 3),
        "breakdown_us_per_message": {
            "policy_engine_with_leak_check": us_per_message("deid_engine"),
            "policy_engine_without_leak_check": us_per_message("deid_engine_no_leak_check"),
            "encode_research_events": us_per_message("deid_encode"),
            "encode_research_events_with_identified_schemas": us_per_message(
                "deid_encode_identified"
            ),
            "decode_identified_events_stage_only": us_per_message("deid_decode"),
        },
        "engine_alone_over_parse_normalize": round(per_pass("deid_engine") / p, 3),
        "cold_caches": {
            "parse_normalize_us_per_message": round(pc / n_msg * 1e6, 1),
            "deidentify_us_per_message": round(dc / n_msg * 1e6, 1),
            "deid_over_parse_normalize": round(dc / pc, 3),
        },
        "target": {"deid_over_parse_normalize_max": TARGET, "met": ratio <= TARGET},
        "machine": {
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "cpus": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
        },
        "budget": {"seconds": seconds, "rounds": rounds},
    }
    if profile:
        report["profile"] = _profile(fused_all, seconds / rounds)
    return report


def _profile(work: Callable[[], int], budget: float) -> str:
    """cProfile of repeated passes of ``work`` (the fused parse_step) for ``budget`` CPU
    seconds (>= 1 pass): the top functions by own time and by cumulative time."""
    profiler = cProfile.Profile()
    started = time.process_time()
    profiler.enable()
    while True:
        work()
        if time.process_time() - started >= budget:
            break
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(25)
    return out.getvalue()
