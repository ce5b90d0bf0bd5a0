"""The sans-I/O core of an MLLP connection: no sockets, no clocks -- bytes and times go in, the
messages to start, the ACK bytes to write and the idle verdict come out."""

from __future__ import annotations

from hl7bus.connectors.mllp.framer import Frame, FramingError, encode_frame
from hl7bus.connectors.mllp.session import Budget, Pending, Session, frame_ack


def session(
    max_in_flight: int = 100,
    *,
    budget: Budget | None = None,
    idle_timeout_s: float = 60.0,
    now: float = 0.0,
    max_frame_bytes: int = 1024,
    wakes: list[str] | None = None,
    name: str = "s",
) -> Session:
    def wake() -> None:
        if wakes is not None:
            wakes.append(name)

    return Session(
        max_frame_bytes=max_frame_bytes,
        max_in_flight=max_in_flight,
        idle_timeout_s=idle_timeout_s,
        now=now,
        budget=budget,
        wake=wake,
    )


def msg(i: int) -> bytes:
    return f"MSH|^~\\&|SEND|FAC|||||ADT^A01|MSG{i}|P|2.5\r".encode()


def chunk(*ids: int) -> bytes:
    return b"".join(encode_frame(msg(i)) for i in ids)


def ack(i: int) -> bytes:
    return f"MSH|^~\\&|||||||ACK|A{i}|P|2.5\rMSA|AA|MSG{i}\r".encode()


def started(s: Session, now: float = 0.0) -> list[tuple[Pending, bytes]]:
    """The messages admitted now, with their payloads (frames only)."""
    out = []
    for item, event in s.admit(now):
        assert isinstance(event, Frame)
        out.append((item, event.payload))
    return out


# -- ACK order -----------------------------------------------------------------------------------


def test_pipelined_frames_in_one_chunk_start_in_arrival_order() -> None:
    s = session()
    events = s.receive(chunk(1, 2, 3), now=1.0)
    assert [e.payload for e in events if isinstance(e, Frame)] == [msg(1), msg(2), msg(3)]
    got = started(s, now=1.0)
    assert [payload for _, payload in got] == [msg(1), msg(2), msg(3)]
    assert not s.waiting
    assert s.outstanding == 3


def test_acks_go_out_in_arrival_order_when_kafka_confirms_out_of_order() -> None:
    s = session()
    s.receive(chunk(1, 2, 3, 4), now=1.0)
    (m1, _), (m2, _), (m3, _), (m4, _) = started(s, now=1.0)

    # The third and second are confirmed first: nothing can be written yet.
    assert s.answer(m3, ack(3)) is False
    assert s.answer(m2, ack(2)) is False
    assert s.take_acks() == (b"", [])
    assert s.outstanding == 4

    # The oldest one is answered: it and every ready one after it go out, in one write.
    assert s.answer(m1, ack(1)) is True
    data, received = s.take_acks()
    assert data == frame_ack(ack(1)) + frame_ack(ack(2)) + frame_ack(ack(3))
    assert received == [1.0, 1.0, 1.0]
    assert s.outstanding == 1

    assert s.answer(m4, ack(4)) is True
    assert s.take_acks() == (frame_ack(ack(4)), [1.0])
    assert s.outstanding == 0


def test_a_message_owed_no_ack_keeps_its_place_but_writes_nothing() -> None:
    s = session()
    s.receive(chunk(1, 2, 3), now=0.0)
    (m1, _), (m2, _), (m3, _) = started(s)
    s.answer(m2, b"")  # e.g. a truncated frame: no ACK owed
    s.answer(m3, ack(3))
    assert s.take_acks() == (b"", [])  # the first still holds them back
    s.answer(m1, ack(1))
    assert s.take_acks()[0] == frame_ack(ack(1)) + frame_ack(ack(3))


def test_framing_errors_in_the_middle_of_a_pipeline() -> None:
    """An oversize frame, a frame cut by a new start block and junk between pipelined frames:
    the oversize and truncated ones take their place in the ACK order (the truncated one owes
    no ACK), the junk is no message."""
    s = session(max_frame_bytes=64)
    oversize = b"MSH|^~\\&|" + b"x" * 100
    data = (
        encode_frame(msg(1))
        + encode_frame(oversize)
        + b"\x0b"
        + msg(2)[:10]  # abandoned: a new start block follows
        + encode_frame(msg(3))
        + b"garbage"
        + encode_frame(msg(4))
    )
    events = s.receive(data, now=0.0)
    kinds = [e.code if isinstance(e, FramingError) else "frame" for e in events]
    assert kinds == ["frame", "oversize", "truncated", "frame", "junk", "frame"]

    admitted = s.admit(0.0)
    kinds = [e.code if isinstance(e, FramingError) else "frame" for _, e in admitted]
    assert kinds == ["frame", "oversize", "truncated", "frame", "frame"]  # junk is not started
    assert s.outstanding == 5
    items = [item for item, _ in admitted]
    nak = b"MSH|^~\\&|||||||ACK|N|P|2.5\rMSA|AE|\r"
    answers = [ack(1), nak, b"", ack(3), ack(4)]
    for item, answer in reversed(list(zip(items, answers, strict=True))):
        s.answer(item, answer)
    data_out, received = s.take_acks()
    assert data_out == b"".join(frame_ack(a) for a in answers if a)
    assert len(received) == 4


def test_the_end_of_the_stream_turns_an_unfinished_frame_into_a_truncated_message() -> None:
    s = session()
    s.receive(encode_frame(msg(1)) + b"\x0b" + msg(2)[:20], now=0.0)
    assert len(s.admit(0.0)) == 1
    events = s.receive(b"", now=1.0)
    assert [(type(e), getattr(e, "code", None)) for e in events] == [(FramingError, "truncated")]
    [(_, event)] = s.admit(1.0)
    assert isinstance(event, FramingError) and event.data == msg(2)[:20]


def test_an_ack_with_block_bytes_is_still_framed() -> None:
    echoed = b"MSH|^~\\&|A\x1cB|\rMSA|AE|\x0bX\r"
    assert frame_ack(echoed) == encode_frame(b"MSH|^~\\&|AB|\rMSA|AE|X\r")


# -- admission -----------------------------------------------------------------------------------


def test_max_in_flight_per_connection() -> None:
    wakes: list[str] = []
    s = session(max_in_flight=2, wakes=wakes)
    s.receive(chunk(1, 2, 3, 4, 5), now=0.0)
    first = started(s, now=0.0)
    assert [p for _, p in first] == [msg(1), msg(2)]
    assert s.waiting  # the rest waits: the listener stops reading

    # An answer alone frees nothing: the slot is held until its ACK is taken for writing.
    s.answer(first[1][0], ack(2))
    assert wakes == []
    assert s.admit(1.0) == []
    s.answer(first[0][0], ack(1))
    s.take_acks()
    assert wakes == ["s"]
    assert [p for _, p in started(s, now=2.0)] == [msg(3), msg(4)]
    assert s.waiting


def test_a_message_that_waited_counts_its_latency_from_when_it_was_reached() -> None:
    s = session(max_in_flight=1)
    s.receive(chunk(1, 2, 3), now=10.0)
    [(m1, _)] = started(s, now=10.0)
    s.answer(m1, ack(1))
    s.take_acks()
    [(m2, _)] = started(s, now=12.5)
    assert m2.received == 10.0  # waiting for admission is part of its ACK latency
    s.answer(m2, ack(2))
    s.take_acks()
    [(m3, _)] = started(s, now=13.0)
    assert m3.received == 12.5  # reached when the one before it started


def test_budget_is_shared_and_served_first_come_first_served() -> None:
    wakes: list[str] = []
    budget = Budget(3)
    a = session(budget=budget, wakes=wakes, name="a")
    b = session(budget=budget, wakes=wakes, name="b")

    a.receive(chunk(1, 2), now=0.0)
    a_items = [item for item, _ in started(a)]
    assert len(a_items) == 2
    b.receive(chunk(11, 12, 13), now=0.0)
    b_items = [item for item, _ in started(b)]
    assert len(b_items) == 1 and b.waiting  # one unit was left
    a.receive(chunk(3), now=0.0)
    assert started(a) == [] and a.waiting  # queued behind b
    assert budget.free == 0

    # A unit given back goes to b, who waited first; a is not woken.
    a.answer(a_items[0], ack(1))
    a.take_acks()
    assert wakes == ["b"]
    assert budget.free == 0
    assert [p for _, p in started(b)] == [msg(12)]  # the unit handed over; 13 queues again
    assert b.waiting

    # The next one goes to a, now first in the queue.
    b.answer(b_items[0], ack(11))
    b.take_acks()
    assert wakes == ["b", "a"]
    assert [p for _, p in started(a)] == [msg(3)]
    assert not a.waiting and b.waiting


def test_a_closed_session_returns_what_it_holds_of_the_budget() -> None:
    wakes: list[str] = []
    budget = Budget(1)
    a = session(budget=budget, wakes=wakes, name="a")
    b = session(budget=budget, wakes=wakes, name="b")
    c = session(budget=budget, wakes=wakes, name="c")
    a.receive(chunk(1), now=0.0)
    [(m1, _)] = started(a)
    b.receive(chunk(2), now=0.0)
    c.receive(chunk(3), now=0.0)
    assert started(b) == [] and started(c) == []

    a.answer(m1, ack(1))
    a.take_acks()
    assert wakes == ["b"]  # b holds the unit now, for its waiting message
    b.close()  # b's connection ends before it could start it: the unit goes on to c
    assert not b.waiting
    assert wakes == ["b", "c"]
    assert [p for _, p in started(c)] == [msg(3)]
    assert budget.free == 0

    c.close()  # a started message keeps its unit until its ACK is taken
    assert budget.free == 0
    assert c.outstanding == 1


def test_a_closed_session_leaves_the_budget_queue() -> None:
    budget = Budget(1)
    a, b = session(budget=budget, name="a"), session(budget=budget, name="b")
    a.receive(chunk(1), now=0.0)
    [(m1, _)] = started(a)
    b.receive(chunk(2), now=0.0)
    assert started(b) == []
    b.close()
    a.answer(m1, ack(1))
    a.take_acks()
    assert budget.free == 1  # nobody queues any more


# -- idle ----------------------------------------------------------------------------------------


def test_idle_after_idle_timeout_without_bytes() -> None:
    s = session(idle_timeout_s=10.0, now=100.0)
    assert s.idle_check(105.0) == 110.0  # look again at the deadline
    assert s.idle_check(110.0) is None  # idle: close it


def test_bytes_move_the_idle_deadline() -> None:
    s = session(idle_timeout_s=10.0, now=0.0)
    s.receive(b"\x0bMSH|", now=7.0)  # even an unfinished frame counts as activity
    assert s.idle_check(10.0) == 17.0
    assert s.idle_check(17.0) is None


def test_a_timer_a_hair_early_does_not_close() -> None:
    s = session(idle_timeout_s=10.0, now=0.0)
    assert s.idle_check(9.9995) is None  # within a millisecond: the timer's slack
    assert s.idle_check(9.99) == 10.0


def test_not_idle_while_an_ack_is_owed() -> None:
    """A send-and-wait sender waiting on a slow Kafka sends nothing, and is not idle."""
    s = session(idle_timeout_s=10.0, now=0.0)
    s.receive(chunk(1), now=0.0)
    [(m1, _)] = started(s)
    assert s.idle_check(25.0) == 35.0  # busy: a full period from now
    s.answer(m1, ack(1))
    assert s.idle_check(35.0) == 45.0  # answered, but its ACK is not written yet
    s.take_acks()
    assert s.idle_check(45.0) is None


def test_not_idle_while_a_message_waits_for_admission() -> None:
    budget = Budget(1)
    a, b = session(budget=budget), session(budget=budget, idle_timeout_s=10.0)
    a.receive(chunk(1), now=0.0)
    started(a)
    b.receive(chunk(2), now=0.0)
    assert started(b) == [] and b.waiting
    assert b.idle_check(50.0) == 60.0
    b.close()
    assert b.idle_check(60.0) is None


# -- frame deadline ------------------------------------------------------------------------------


def test_a_frame_trickling_in_is_overdue_at_its_deadline() -> None:
    """A slowloris sender: a byte a second keeps the connection from being idle, but the frame
    must end within frame_timeout_s of the read that brought its start block."""
    s = Session(
        max_frame_bytes=1024, max_in_flight=10, idle_timeout_s=5.0, now=0.0, frame_timeout_s=10.0
    )
    assert s.frame_deadline is None  # no frame open
    s.receive(b"\x0bM", now=1.0)
    assert s.frame_deadline == 11.0
    for t in range(2, 11):
        s.receive(b"S", now=float(t))
        assert s.idle_check(float(t)) == t + 5.0  # never idle
        assert not s.frame_overdue(float(t))
    assert s.frame_deadline == 11.0  # bytes do not move it
    assert s.frame_overdue(10.9995)  # the timer's millisecond of slack
    # Closed: the unfinished frame becomes a truncated frame, and no frame is open.
    [event] = s.receive(b"", now=11.0)
    assert isinstance(event, FramingError) and event.code == "truncated"
    assert s.frame_deadline is None


def test_the_deadline_runs_from_the_read_that_opened_the_frame() -> None:
    s = Session(
        max_frame_bytes=1024, max_in_flight=10, idle_timeout_s=60.0, now=0.0, frame_timeout_s=3.0
    )
    s.receive(chunk(1) + b"\x0bMSH|", now=5.0)  # one frame ends, the next opens
    assert s.frame_deadline == 8.0
    s.receive(b"rest\x1c\x0d" + b"\x0bMSH", now=7.0)  # that one ends, a third opens
    assert s.frame_deadline == 10.0
    s.receive(b"|\x1c\x0d", now=9.0)
    assert s.frame_deadline is None
    assert not s.frame_overdue(100.0)
    # Without a limit there is never a deadline.
    unlimited = session()
    unlimited.receive(b"\x0bMSH", now=0.0)
    assert unlimited.frame_deadline is None


def test_an_answer_of_several_acks_goes_out_as_several_frames_in_its_place() -> None:
    """A batch acknowledged message by message: its ACKs, each in its own frame, in the place
    of the frame that carried it."""
    s = session()
    s.receive(chunk(1, 2), now=0.0)
    (m1, _), (m2, _) = started(s)
    s.answer(m2, ack(2))
    s.answer(m1, (ack(11), ack(12)))
    data, received = s.take_acks()
    assert data == frame_ack(ack(11)) + frame_ack(ack(12)) + frame_ack(ack(2))
    assert received == [0.0, 0.0]  # one latency per message received


def test_waiting_for_admission_does_not_count_against_the_open_frame() -> None:
    """Backpressure is the listener's doing: a frame left half-read while the connection waited
    for a slot gets that time back."""
    s = Session(
        max_frame_bytes=1024, max_in_flight=1, idle_timeout_s=60.0, now=0.0, frame_timeout_s=5.0
    )
    s.receive(chunk(1, 2) + b"\x0bMSH|", now=1.0)  # the third frame is half read
    [(m1, _)] = started(s, now=1.0)
    assert s.waiting and s.frame_deadline == 6.0
    s.answer(m1, ack(1))
    s.take_acks()  # a slot frees up 20 s later
    started(s, now=21.0)
    assert s.frame_deadline == 26.0
    assert not s.frame_overdue(21.0)
