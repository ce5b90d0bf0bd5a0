"""``hl7bus bench scrub``: free-text de-identification on an annotated synthetic set.

Corpus: :func:`bench.scrubset.generate` (several hundred Korean, English and mixed notes in
OBX TX/FT/ST, NTE and MDM messages, every PHI span annotated with its category, decoys that
must survive). For each note the scrubber gets what the de-identify stage gives it: the note's
text and the identifiers of the message that carries it (``identifiers_of``).

Reported, for this tree and for the named peer (the scrubber of the commit ``--peer``, by
default the base commit of issue 16, loaded from git into a package of its own and run in the
same process, same notes, same rounds):

* ``recall`` per PHI category (:data:`bench.scrubset.CATEGORIES`) and ``decoy_survival``;
* ``withheld``: events the leak check refuses when this tree's de-identification engine
  (policy ``--policy``, leak check on) makes the research form of every event of every
  message (a refused event is safe but lost for research), and the other refusals;
* cost per note, CPU microseconds of this process (per core): ``identifiers`` (identifiers_of
  of the message) and ``scrub`` (scrub_text of the note), warm caches as in a live feed, timed in
  interleaved rounds; ``cost_ratio`` is this tree's over the peer's, for the scrub (best round
  of each, and the range of the round-by-round ratio) and for both.

``--analyzer kiwi`` adds the contender ``this+kiwi``: Korean proper nouns (NNP) that a
morphological analyzer finds, of name shape (a surname and one to three syllables, not a role
word), replaced before this tree's scrubber. It needs ``pip install kiwipiepy==0.24.1
kiwipiepy-model==0.24.0`` (not a dependency of hl7bus: evaluated and not adopted, see
BENCHMARKS.md, scrub); it is scored and timed like the others, and its tokenizer alone too.

Targets (issue 16): recall at least 0.98 in every category, decoy survival at least 0.98,
scrub cost per note at most 2x the peer's.
"""

from __future__ import annotations

import gc
import importlib.util
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any
from zoneinfo import ZoneInfo

from bench.scrubset import Note, generate, score
from hl7bus.hl7v2 import Message, parse
from hl7bus.streams import deid, scrub
from hl7bus.streams.deid import DeidError
from hl7bus.streams.parse import events_from_raw

PEER = "70c1b57"  # main when issue 16 was taken up: the scrubber before this work
SEOUL = ZoneInfo("Asia/Seoul")
TARGETS = {"recall": 0.98, "decoy_survival": 0.98, "cost_ratio": 2.0}
_TEXT_FIELDS = ("value_text", "notes", "text")


def load_peer(ref: str, into: Path) -> ModuleType:
    """The scrub package of commit ``ref`` of this checkout, written under ``into`` and imported
    as a package of its own (its modules import ``hl7bus.hl7v2``, which this work does not
    change). Its ``__init__`` imports every module, so ``into`` may go once this returns."""
    root = Path(__file__).resolve().parent.parent
    listed = subprocess.run(
        ["git", "-C", str(root), "ls-tree", "--name-only", ref, "streams/scrub/"],
        capture_output=True,
        text=True,
    )
    if listed.returncode != 0 or not listed.stdout.strip():
        raise ValueError(f"--peer {ref}: no streams/scrub/ at that commit in this checkout")
    names = listed.stdout.split()
    folder = into / "scrub_peer"
    folder.mkdir()
    for name in names:
        if name.endswith(".py"):
            source = subprocess.run(
                ["git", "-C", str(root), "show", f"{ref}:{name}"],
                check=True,
                capture_output=True,
            ).stdout
            (folder / Path(name).name).write_bytes(source)
    package_name = f"scrub_peer_{ref}"
    spec = importlib.util.spec_from_file_location(
        package_name, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[package_name] = module
    spec.loader.exec_module(module)
    return module


class _WithKiwi:
    """This tree's scrubber after kiwipiepy's name-shaped proper nouns are replaced."""

    def __init__(self) -> None:
        from kiwipiepy import Kiwi  # type: ignore[import-not-found]  # optional, not a dependency

        from hl7bus.streams.scrub.cues import ROLE_WORDS, SURNAMES

        self.kiwi = Kiwi()
        self.surnames, self.roles = SURNAMES, ROLE_WORDS
        self.identifiers_of = scrub.identifiers_of

    def _name_shaped(self, form: str) -> bool:
        return (
            2 <= len(form) <= 4
            and all("\uac00" <= c <= "\ud7a3" for c in form)
            and (form[:1] in self.surnames or form[:2] in self.surnames)
            and form not in self.roles
        )

    def tokenize(self, text: str) -> Any:
        return self.kiwi.tokenize(text)

    def scrub_text(self, text: str, ids: Any) -> Any:
        from hl7bus.streams.scrub.search import replace_spans

        spans = [
            (t.start, t.start + t.len, scrub.Kind.NAME)
            for t in self.kiwi.tokenize(text)
            if t.tag == "NNP" and self._name_shaped(t.form)
        ]
        if spans:
            text = replace_spans(text, spans, {})
        return scrub.scrub_text(text, ids)


def _scrubbed(impl: Any, notes: list[Note], messages: list[Message]) -> list[str]:
    return [
        impl.scrub_text(n.text, impl.identifiers_of(m)).text
        for n, m in zip(notes, messages, strict=True)
    ]


def _timed(work: Any, budget: float) -> float:
    """CPU seconds per pass of ``work`` (repeated within ``budget`` CPU seconds, >= 1 pass)."""
    gc.collect()
    passes = 0
    started = time.process_time()
    while True:
        work()
        passes += 1
        elapsed = time.process_time() - started
        if elapsed >= budget:
            return elapsed / passes


def _withheld(notes: list[Note], policy_ref: str) -> dict[str, Any]:
    """Events refused by this tree's de-identification (leak check on), and the notes whose
    text-carrying event was among them."""
    policy = deid.Policy.load(policy_ref)
    key = deid.Pseudonymizer(b"bench-key-0123456789abcdef012345", "bench")
    refused: Counter[str] = Counter()
    events = notes_withheld = 0
    for note in notes:
        envelope = {
            "feed": "bench",
            "received_at": datetime(2026, 3, 5, 3, 0, tzinfo=UTC),
            "charset": "utf-8",
            "raw": note.message,
        }
        note_lost = False
        for event in events_from_raw(envelope, SEOUL):
            events += 1
            try:
                deid.deidentify(event.type, event.record, policy, key, True)
            except DeidError as exc:
                refused[exc.code] += 1
                if any(event.record.get(f) for f in _TEXT_FIELDS):
                    note_lost = True
        notes_withheld += note_lost
    return {
        "events": events,
        "withheld_by_leak_check": refused.pop("leak", 0),
        "other_refusals": dict(refused),
        "notes_withheld": notes_withheld,
    }


def profile(notes: int = 600, seed: int = 16, passes: int = 20, top: int = 30) -> str:
    """cProfile of this tree's ``scrub_text`` over the notes, warm caches (for ``--profile``)."""
    import cProfile
    import io
    import pstats

    corpus = generate(notes, seed)
    pairs = [(n.text, scrub.identifiers_of(parse(n.message))) for n in corpus]
    for text, ids in pairs:
        scrub.scrub_text(text, ids)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(passes):
        for text, ids in pairs:
            scrub.scrub_text(text, ids)
    prof.disable()
    out = io.StringIO()
    out.write(f"== scrub_text: {passes} passes over {notes} notes (seed {seed}) ==\n")
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def run(
    notes: int = 600,
    seed: int = 16,
    seconds: float = 1.0,
    rounds: int = 3,
    peer: str = PEER,
    policy_ref: str = "kr-pseudonym",
    show_misses: int = 0,
    analyzer: str | None = None,
) -> dict[str, Any]:
    if analyzer not in (None, "kiwi"):
        raise ValueError(f"analyzer {analyzer!r}: the only one is kiwi")
    corpus = generate(notes, seed)
    messages = [parse(n.message) for n in corpus]
    with tempfile.TemporaryDirectory(prefix="scrub-peer-") as tmp:
        peer_impl = load_peer(peer, Path(tmp))
    contenders: dict[str, Any] = {"this": scrub, f"peer@{peer}": peer_impl}
    if analyzer == "kiwi":
        contenders["this+kiwi"] = _WithKiwi()
    quality: dict[str, Any] = {}
    for name, impl in contenders.items():
        s = score(corpus, _scrubbed(impl, corpus, messages))
        quality[name] = {
            "recall": s.recall(),
            "decoy_survival": s.decoy_survival(),
            "phi_spans": dict(s.phi),
            "decoys": s.decoys,
        }
        if show_misses and name == "this":
            quality[name]["missed"] = s.missed[:show_misses]
            quality[name]["decoys_lost"] = s.lost[:show_misses]

    # Cost per note, in interleaved rounds (warm caches: each contender's caches filled by
    # the scoring pass above, as in a live feed where patients and doctors recur).
    ids = {name: [impl.identifiers_of(m) for m in messages] for name, impl in contenders.items()}
    samples: dict[str, dict[str, list[float]]] = {
        name: {"identifiers": [], "scrub": []} for name in contenders
    }
    for _ in range(rounds):
        for name, impl in contenders.items():
            of = impl.identifiers_of
            scrub_text = impl.scrub_text
            their_ids = ids[name]

            def identifiers_all(of: Any = of) -> None:
                for m in messages:
                    of(m)

            def scrub_all(scrub_text: Any = scrub_text, their_ids: Any = their_ids) -> None:
                for n, i in zip(corpus, their_ids, strict=True):
                    scrub_text(n.text, i)

            samples[name]["identifiers"].append(_timed(identifiers_all, seconds) / notes * 1e6)
            samples[name]["scrub"].append(_timed(scrub_all, seconds) / notes * 1e6)
    cost: dict[str, dict[str, float]] = {
        name: {part: round(min(v), 2) for part, v in parts.items()}
        for name, parts in samples.items()
    }
    if analyzer == "kiwi":
        tokenizer = contenders["this+kiwi"]

        def tokenize_all() -> None:
            for n in corpus:
                tokenizer.tokenize(n.text)

        cost["this+kiwi"]["tokenize"] = round(_timed(tokenize_all, seconds) / notes * 1e6, 2)
    peer_name = f"peer@{peer}"
    this_total = cost["this"]["identifiers"] + cost["this"]["scrub"]
    peer_total = cost[peer_name]["identifiers"] + cost[peer_name]["scrub"]
    ratio: dict[str, Any] = {
        "scrub": round(cost["this"]["scrub"] / cost[peer_name]["scrub"], 3),
        "identifiers_and_scrub": round(this_total / peer_total, 3),
    }
    # The ratio round by round: a wide range means a noisy machine (BENCHMARKS.md).
    per_round = [
        t / p for t, p in zip(samples["this"]["scrub"], samples[peer_name]["scrub"], strict=True)
    ]
    ratio["scrub_range"] = [round(min(per_round), 3), round(max(per_round), 3)]
    recall = quality["this"]["recall"]
    return {
        "benchmark": "scrub",
        "command": f"hl7bus bench scrub --notes {notes} --seed {seed} --seconds {seconds} "
        f"--rounds {rounds} --peer {peer} --policy {policy_ref}"
        + (f" --analyzer {analyzer}" if analyzer else ""),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "notes": notes,
        "languages": dict(Counter(n.language for n in corpus)),
        "carriers": dict(Counter(n.carrier for n in corpus)),
        "unlisted_names_without_cue": sum(n.unlisted_cue_free for n in corpus),
        "quality": quality,
        "leak_check": _withheld(corpus, policy_ref),
        "cost_us_per_note": cost,
        "cost_ratio": ratio,
        "targets": TARGETS,
        "targets_met": {
            "recall": all(v >= TARGETS["recall"] for v in recall.values()),
            "decoy_survival": quality["this"]["decoy_survival"] >= TARGETS["decoy_survival"],
            "cost_ratio": ratio["scrub"] <= TARGETS["cost_ratio"],
        },
    }
