"""The worker's stage logic (streams/stage.py) on plain records, without Kafka or faust:
what a batch emits and in which order, duplicate sends (within a batch, and across a restart
through the store), DLQ routing, and what a delivered batch counts."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from prometheus_client import REGISTRY
from samples import envelope, feed, first, with_control_id

from hl7bus.hl7v2 import Message, parse
from hl7bus.schemas import codec, topics
from hl7bus.streams.deid import Policy, Pseudonymizer, profile_text
from hl7bus.streams.stage import Batch, Record, Stages
from hl7bus.streams.steps import DeidSettings, Sighting, Verdict, parse_step
from hl7bus.streams.terminology import Terminology

SEOUL = ZoneInfo("Asia/Seoul")
KEY = Pseudonymizer(b"0123456789abcdef0123456789abcdef", "k1")
DEID = DeidSettings(Policy.load("kr-pseudonym"), KEY, leak_check=True)
WINDOW_S = 3600


class DictStore:
    """The dedupe store as a dict; `remembered` keeps each write with its source record."""

    def __init__(self, data: dict[str, list[Sighting]] | None = None) -> None:
        self.data: dict[str, list[Sighting]] = {k: list(v) for k, v in (data or {}).items()}
        self.remembered: list[tuple[Sighting, Record]] = []

    def seen(self, key: str) -> list[Sighting]:
        return self.data.get(key, [])

    def remember(self, sighting: Sighting, source: Record) -> None:
        self.data.setdefault(sighting.key, []).append(sighting)
        self.remembered.append((sighting, source))


def _raw(message: Message, feed_name: str = "test", later_s: int = 0) -> bytes:
    raw = envelope(message, feed_name)
    raw["received_at"] += timedelta(seconds=later_s)
    return codec.encode("RawMessage", raw)


def _records(values: list[bytes], topic: str = "hl7.raw") -> list[Record]:
    """Records spread over two partitions, offsets counting up in each."""
    return [
        Record(f"k{i}".encode(), value, topic, i % 2, 100 + i // 2)
        for i, value in enumerate(values)
    ]


def _stages(store: DictStore | None = None, fused: bool = False) -> Stages:
    return Stages(SEOUL, DEID, store or DictStore(), WINDOW_S, fused)


def test_a_parse_batch_emits_every_records_events_in_record_order() -> None:
    messages = feed()[:20]
    records = _records([_raw(m) for m in messages])
    batch = _stages().process("parse", records)

    expected = [out for r in records for out in parse_step(r.key, r.value, SEOUL)]
    assert batch.outputs == expected  # record order kept, events of a message together
    assert all(out.topic_id == topics.EVENTS for out in batch.outputs)
    assert batch.counts.records_in == Counter({"parse": 20})
    assert batch.counts.outcomes == Counter({("parse", "ok"): len(expected)})
    assert not batch.counts.errors and not batch.counts.verdicts
    assert [source for source, _ in batch.sightings] == records


def test_the_fused_stage_writes_each_messages_research_forms_after_its_events() -> None:
    message = first("ORU^R01")
    [record] = _records([_raw(message)])
    batch = _stages(fused=True).process("parse", [record])

    assert batch.outputs == parse_step(record.key, record.value, SEOUL, DEID)
    identified = [o for o in batch.outputs if o.topic_id == topics.EVENTS]
    research = batch.outputs[len(identified) :]
    assert identified and len(research) == len(identified)
    assert all(o.topic_id.startswith("research.") for o in research)
    assert batch.counts.records_in == Counter({"parse": 1, "deidentify": len(identified)})
    assert batch.counts.outcomes == Counter(
        {("parse", "ok"): len(identified), ("deidentify", "ok"): len(research)}
    )


def test_without_identified_output_the_fused_stage_writes_no_identified_events() -> None:
    messages = [first("ORU^R01"), first("ADT^A04")]
    records = _records([_raw(m) for m in messages])
    with_events = _stages(fused=True).process("parse", records)
    stages = Stages(SEOUL, DEID, DictStore(), WINDOW_S, fused=True, identified_output=False)
    batch = stages.process("parse", records)

    assert batch.outputs == [o for o in with_events.outputs if o.topic_id != topics.EVENTS]
    assert all(o.topic_id.startswith("research.") for o in batch.outputs)
    assert batch.counts.records_in == Counter({"parse": 2, "deidentify": len(batch.outputs)})
    assert batch.counts.records_in == with_events.counts.records_in
    assert batch.counts.outcomes == Counter({("deidentify", "ok"): len(batch.outputs)})
    assert batch.sightings == with_events.sightings  # dedupe is unchanged
    with pytest.raises(ValueError, match="needs both stages"):
        Stages(SEOUL, DEID, DictStore(), WINDOW_S, fused=False, identified_output=False)


def test_a_resend_is_dropped_within_the_batch_and_after_a_restart() -> None:
    adt, oru, other = first("ADT^A04"), first("ORU^R01"), first("ADT^A08")
    store = DictStore()
    stages = _stages(store)
    first_records = _records([_raw(adt), _raw(adt, later_s=5), _raw(oru)])
    batch = stages.process("parse", first_records)

    # The resend in the same batch is counted, not parsed.
    assert batch.outputs == [
        out
        for r in (first_records[0], first_records[2])
        for out in parse_step(r.key, r.value, SEOUL)
    ]
    assert batch.counts.verdicts == Counter({(Verdict.RESENT, "test"): 1})
    assert batch.counts.records_in == Counter({"parse": 3})

    stages.delivered(batch, now=1.0, elapsed_s=0.01)
    adt_key, oru_key = f"test|{adt.control_id}", f"test|{oru.control_id}"
    assert store.remembered == [
        (store.data[adt_key][0], first_records[0]),
        (store.data[oru_key][0], first_records[2]),
    ]
    assert store.data[adt_key][0].source == (first_records[0].partition, first_records[0].offset)

    # A restarted worker: new Stages, the store as its changelog restores it.
    restarted = _stages(DictStore(store.data))
    resent = _records([_raw(oru, later_s=60), _raw(other), _raw(adt, feed_name="elsewhere")])
    again = restarted.process("parse", resent)
    assert again.outputs == [
        out for r in resent[1:] for out in parse_step(r.key, r.value, SEOUL)
    ]  # the resend dropped; a new message and the same MSH-10 from another feed go on
    assert again.counts.verdicts == Counter({(Verdict.RESENT, "test"): 1})


def test_a_redelivered_record_is_not_re_emitted_nor_counted_as_a_resend() -> None:
    """A crash after the outputs were confirmed (and the sighting remembered) but before the
    offset commit: the same raw record comes again, to this worker or another."""
    store = DictStore()
    stages = _stages(store)
    records = _records([_raw(first("ADT^A04")), _raw(first("ORU^R01"))])
    stages.delivered(stages.process("parse", records), now=1.0, elapsed_s=0.01)

    taken_over = _stages(DictStore(store.data)).process("parse", records)
    assert taken_over.outputs == []
    assert taken_over.counts.verdicts == Counter({(Verdict.REDELIVERED, "test"): 2})
    assert taken_over.sightings == []


def test_a_reused_control_id_with_new_content_is_processed_under_new_event_ids() -> None:
    """A sender that reset its counter: same feed and MSH-10, another message. It is processed
    and counted; its event ids differ, so the sinks keep both messages' rows."""
    adt = first("ADT^A04")
    assert adt.control_id
    reused = with_control_id(first("ORU^R01"), adt.control_id)
    store = DictStore()
    stages = _stages(store)
    [before] = _records([_raw(adt)])
    stages.delivered(stages.process("parse", [before]), now=1.0, elapsed_s=0.01)

    after = Record(b"k", _raw(reused, later_s=30), "hl7.raw", 0, 500)
    batch = stages.process("parse", [after])
    assert batch.outputs == parse_step(after.key, after.value, SEOUL)
    assert batch.counts.verdicts == Counter({(Verdict.REUSED, "test"): 1})
    first_ids = {
        codec.decode(o.value)[1]["event_id"] for o in stages.process("parse", [before]).outputs
    }
    assert first_ids.isdisjoint(codec.decode(o.value)[1]["event_id"] for o in batch.outputs)
    stages.delivered(batch, now=2.0, elapsed_s=0.01)
    # Both contents are remembered: a late resend of either is still a resend.
    resent = [
        Record(b"k", _raw(message, later_s=40), "hl7.raw", 1, 900 + i)
        for i, message in enumerate([adt, reused])
    ]
    late = stages.process("parse", resent)
    assert late.outputs == [] and late.counts.verdicts == Counter({(Verdict.RESENT, "test"): 2})


def test_nothing_is_remembered_until_the_outputs_are_delivered() -> None:
    """A crash between sending and delivery redelivers the batch: it must be re-emitted, not
    taken for a resend of itself."""
    store = DictStore()
    stages = _stages(store)
    records = _records([_raw(first("ADT^A04"))])
    sent = stages.process("parse", records)
    assert store.data == {}
    redelivered = stages.process("parse", records)
    assert redelivered.outputs == sent.outputs and not redelivered.counts.verdicts


def test_undecodable_and_unparsable_records_go_to_the_dlq_with_their_reason() -> None:
    broken = envelope(first("ADT^A01"))
    broken["raw"] = b"this is no HL7 message"
    good = _raw(first("ADT^A04"))
    records = _records([b"not avro", codec.encode("RawMessage", broken), good])
    batch = _stages().process("parse", records)

    dlq = [o for o in batch.outputs if o.topic_id == topics.DLQ]
    assert [(o.key, o.value) for o in dlq] == [(r.key, r.value) for r in records[:2]]
    assert [dict(o.headers) for o in dlq] == [
        {"hl7bus.stage": b"parsing", "hl7bus.reason": b"undecodable_envelope"},
        {"hl7bus.stage": b"parsing", "hl7bus.reason": b"hl7_parse_error"},
    ]
    assert batch.outputs[:2] == dlq  # in record order, before the good record's events
    assert batch.counts.errors == Counter(
        {("parse", "undecodable_envelope"): 1, ("parse", "hl7_parse_error"): 1}
    )
    assert batch.counts.outcomes[("parse", "dlq")] == 2
    # An undecodable record has no sighting (no feed, no MSH-10) to remember.
    assert [source for source, _ in batch.sightings] == records[1:]


def test_de_identification_refusals_are_counted_under_the_deidentify_stage() -> None:
    shipped = yaml.safe_load(profile_text("kr-pseudonym"))
    without_orders = {**shipped, "events": {**shipped["events"]}}
    del without_orders["events"]["Order"]
    deid = DeidSettings(Policy.from_data(without_orders), KEY, leak_check=True)
    stages = Stages(SEOUL, deid, DictStore(), WINDOW_S, fused=True)
    batch = stages.process("parse", _records([_raw(first("ORU^R01"))]))

    refused = [o for o in batch.outputs if o.topic_id == topics.DLQ]
    assert refused and all(
        dict(o.headers) == {"hl7bus.stage": b"deidentifying", "hl7bus.reason": b"no_policy"}
        for o in refused
    )
    assert batch.counts.errors == Counter({("deidentify", "no_policy"): len(refused)})
    assert batch.counts.outcomes[("deidentify", "dlq")] == len(refused)
    assert ("parse", "dlq") not in batch.counts.outcomes


def test_the_deidentify_stage_alone_reads_identified_events() -> None:
    events = [
        o.value for o in parse_step(None, _raw(first("ORU^R01")), SEOUL) if o.topic_id == "events"
    ]
    records = _records([*events, b"garbage"], topic="hl7.events")
    batch = _stages().process("deidentify", records)

    assert [o.topic_id for o in batch.outputs[:-1]] == [
        topics.research(codec.decode(v)[0]) for v in events
    ]
    assert batch.outputs[-1].topic_id == topics.DLQ
    assert dict(batch.outputs[-1].headers)["hl7bus.reason"] == b"undecodable_event"
    assert batch.counts.records_in == Counter({"deidentify": len(records)})
    assert batch.counts.outcomes == Counter(
        {("deidentify", "ok"): len(events), ("deidentify", "dlq"): 1}
    )
    assert batch.sightings == []


def test_delivery_notes_progress_and_adds_the_counts_to_the_metrics() -> None:
    def sample(name: str, labels: dict[str, str]) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    feed_name = "metrics-test"
    stages = _stages()
    adt = first("ADT^A04")
    records = _records([_raw(adt, feed_name), _raw(adt, feed_name, later_s=1), b"junk"])
    batch = stages.process("parse", records)
    before = {
        "in": sample("hl7bus_stream_in_records_total", {"stage": "parse"}),
        "dup": sample("hl7bus_stream_duplicates_total", {"feed": feed_name}),
        "err": sample(
            "hl7bus_stream_errors_total", {"stage": "parse", "code": "undecodable_envelope"}
        ),
    }
    stages.delivered(batch, now=50.0, elapsed_s=0.02)
    assert sample("hl7bus_stream_in_records_total", {"stage": "parse"}) == before["in"] + 3
    assert sample("hl7bus_stream_duplicates_total", {"feed": feed_name}) == before["dup"] + 1
    assert (
        sample("hl7bus_stream_errors_total", {"stage": "parse", "code": "undecodable_envelope"})
        == before["err"] + 1
    )
    # Partition 0 got to offset 101 (next 102), partition 1 to 100 (next 101): nothing waits.
    assert (
        stages.progress.stalled(
            {("hl7.raw", 0): 102, ("hl7.raw", 1): 101}, {}, now=500.0, timeout=1.0
        )
        == []
    )


def test_an_unknown_stage_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown stage 'normalize'"):
        _stages().process("normalize", [])


def test_a_replayed_record_is_processed_as_new_and_not_remembered() -> None:
    """hl7bus.replay (an operator's replay or resubmit) bypasses dedupe: the resend of an
    already-seen message is processed, and nothing is remembered for it."""
    message = first("ADT^A01")
    store = DictStore()
    stages = _stages(store)
    [original] = _records([_raw(message)])
    stages.delivered(stages.process("parse", [original]), 0.0, 0.01)
    assert len(store.remembered) == 1
    replayed = Record(original.key, original.value, "hl7.raw", 0, 500, replay=True)
    batch = stages.process("parse", [replayed])
    assert batch.outputs == parse_step(original.key, original.value, SEOUL)
    assert not batch.counts.verdicts and not batch.sightings
    stages.delivered(batch, 1.0, 0.01)
    assert len(store.remembered) == 1
    # Without the header the same bytes again are a sender's resend: dropped.
    again = Record(original.key, original.value, "hl7.raw", 0, 501)
    assert stages.process("parse", [again]).outputs == []


def test_the_stages_map_codes_with_the_deployments_code_maps() -> None:
    """worker.code_maps reach the parse stage: the golden feed's local lab codes become LOINC
    with its map (HBSAG: LOINC 5196-1), and stay unmapped with the packaged maps alone."""
    golden = Path(__file__).parent / "golden"
    message = parse((golden / "oru_r01.hl7").read_bytes())
    [record] = _records([_raw(message, feed_name="golden")])
    terms = Terminology.load([golden / "codes.csv"])
    mapped = Stages(SEOUL, DEID, DictStore(), WINDOW_S, False, terms=terms).process(
        "parse", [record]
    )
    packaged = _stages().process("parse", [record])

    assert mapped.outputs == parse_step(record.key, record.value, SEOUL, terms=terms)

    def codes(batch: Batch) -> set[str]:
        return {
            str(codec.decode(o.value)[1].get("standard_code"))
            for o in batch.outputs
            if codec.decode(o.value)[0] == "Observation"
        }

    assert "5196-1" in codes(mapped) and "5196-1" not in codes(packaged)
