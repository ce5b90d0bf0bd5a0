"""Research contracts (streams/deid/contract.py): each research topic's schema is derived from
the identified schema and the policy; the shipped profiles' are published in schemas/research/;
the pipeline writes with them, and a consumer holding only a published file reads its records."""

from __future__ import annotations

import io
import json
import secrets
import shutil
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import fastavro
import published_contracts
import pytest
from test_events_golden import CASES, golden_envelope
from typer.testing import CliRunner

from hl7bus.ops.cli import app
from hl7bus.schemas import codec, topics
from hl7bus.streams.deid import PROFILES, Policy, PolicyError, Pseudonymizer
from hl7bus.streams.deid.contract import (
    check_published,
    derive,
    file_name,
    kept,
    research_schema,
    research_schemas,
)
from hl7bus.streams.steps import DeidSettings, parse_step

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"
SEOUL = ZoneInfo("Asia/Seoul")
KEY = Pseudonymizer(b"contract-test-key-0123456789abcd", "c1")
runner = CliRunner()


@pytest.mark.parametrize("profile", PROFILES)
def test_a_contract_holds_only_what_the_policy_lets_out(profile: str) -> None:
    policy = Policy.load(profile)
    for event_type, contract in research_schemas(policy).items():
        identified = codec.schema(event_type).definition
        actions = policy.actions[event_type]
        fields = {f["name"]: f for f in contract.definition["fields"]}
        # Dropped fields are absent; the rest keep their order, type and PHI class.
        assert list(fields) == [f["name"] for f in identified["fields"] if kept(f["name"], actions)]
        assert "message_identifiers" not in fields and "source_control_id" not in fields
        assert {"pseudonym_key_id", "deid_policy"} <= set(fields)  # the engine's own stay
        for source in identified["fields"]:
            field = fields.get(source["name"])
            if field is None:
                continue
            assert (field["type"], field["phi"]) == (source["type"], source["phi"])
            engine = source["name"] in ("pseudonym_key_id", "deid_policy")
            action = "engine" if engine else actions[source["name"]]
            assert field["deid"] == action
            if action == "pseudonymize":
                assert field["doc"].startswith("Keyed HMAC-SHA-256 pseudonym"), field
                assert field["doc"].endswith(source["doc"])
            elif action == "keep":
                assert field["doc"] == source["doc"]
        # Same full name (resolution and event types go by it); the policy hash in the schema.
        assert (contract.name, contract.full_name) == (event_type, f"hl7bus.v1.{event_type}")
        assert contract.definition[codec.POLICY_PROPERTY] == policy.digest == contract.policy
        assert contract.definition[codec.PROFILE_PROPERTY] == policy.name
        assert policy.digest in contract.definition["doc"]
        assert policy.digest in fields["deid_policy"]["doc"]
        assert contract.fingerprint != codec.schema(event_type).fingerprint


def test_no_contract_lets_out_a_direct_identifier_as_it_is() -> None:
    for profile in PROFILES:
        for contract in research_schemas(Policy.load(profile)).values():
            for field in contract.definition["fields"]:
                if field["phi"] == "direct":
                    assert field["deid"] == "pseudonymize", (profile, contract.name, field["name"])
                assert field["name"] not in ("national_id", "family_name", "mrn", "phone")


def test_a_required_field_cannot_be_dropped() -> None:
    policy = Policy.from_data({"events": {"Observation": {"feed": "keep"}}})
    with pytest.raises(PolicyError, match=r"Observation\.event_id: required"):
        research_schema(policy, "Observation")
    with pytest.raises(PolicyError, match="no entry for Patient"):
        research_schema(policy, "Patient")


def test_a_worker_with_such_a_policy_does_not_start(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("events:\n  Observation:\n    feed: keep\n", encoding="utf-8")
    env = {"HL7BUS_DEID_POLICY": str(policy), "HL7BUS_DEID_KEY": secrets.token_hex(32)}
    result = runner.invoke(app, ["worker"], env=env)
    assert result.exit_code == 2
    assert "Observation.event_id: required" in result.output


def test_a_named_type_moves_to_its_first_kept_use() -> None:
    """When the field that declares a record type is dropped, the next field that names it
    declares it instead (else the contract would not parse)."""
    item = {"type": "record", "name": "Id", "fields": [{"name": "v", "type": "string"}]}
    identified = {
        "type": "record",
        "name": "T",
        "namespace": "x.v1",
        "fields": [
            {"name": "event_id", "type": "string", "phi": "none", "doc": "id"},
            {"name": "ids", "type": ["null", {"type": "array", "items": item}], "default": None},
            {"name": "old", "type": ["null", {"type": "array", "items": "x.v1.Id"}],
             "default": None},
            {"name": "older", "type": ["null", "Id"], "default": None},
        ],
    }  # fmt: skip
    policy = Policy("t", {"T": {"event_id": "keep", "old": "keep", "older": "keep"}}, "d1")
    contract = derive(identified, policy)
    assert [f["name"] for f in contract["fields"]] == ["event_id", "old", "older"]
    assert contract["fields"][1]["type"][1]["items"]["name"] == "Id"  # declared here now
    assert contract["fields"][2]["type"] == ["null", "Id"]  # and referred to after
    fastavro.parse_schema(contract)


def test_published_contracts_are_the_derivation() -> None:
    published = {p.name: p.read_text("utf-8") for p in (SCHEMAS / "research").glob("*.avsc")}
    identified = {n: s.definition for n, s in codec.schemas().items()}
    assert check_published(published, identified, [Policy.load(p) for p in PROFILES]) == [], (
        "run `hl7bus schemas research`"
    )
    assert len(published) == sum(len(Policy.load(p).actions) for p in PROFILES)
    # The codec knows them all by fingerprint, and the CLI writes the same files.
    assert {s.fingerprint for p in codec.published_contracts().values() for s in p.values()} == {
        research_schema(Policy.load(p), t).fingerprint
        for p in PROFILES
        for t in Policy.load(p).actions
    }


def test_schemas_research_writes_the_contracts_of_a_policy_file(tmp_path: Path) -> None:
    policy_file = tmp_path / "site.yaml"
    data = (ROOT / "streams" / "policies" / "limited.yaml").read_text("utf-8")
    policy_file.write_text(data.replace("name: limited", "name: site-1"), encoding="utf-8")
    out = tmp_path / "out"
    result = runner.invoke(app, ["schemas", "research", "-p", str(policy_file), "-o", str(out)])
    assert result.exit_code == 0, result.output
    written = json.loads((out / "site-1.patient.avsc").read_text("utf-8"))
    assert written == research_schema(Policy.load(policy_file), "Patient").definition
    assert written[codec.PROFILE_PROPERTY] == "site-1"


def _copy_schemas(tmp_path: Path) -> Path:
    copy = tmp_path / "schemas"
    (copy / "research").mkdir(parents=True)
    for source in SCHEMAS.glob("*.avsc"):
        shutil.copy(source, copy)
    for source in (SCHEMAS / "research").glob("*.avsc"):
        shutil.copy(source, copy / "research")
    return copy


def test_schemas_check_covers_the_research_contracts(tmp_path: Path) -> None:
    result = runner.invoke(app, ["schemas", "check"])
    assert result.exit_code == 0, result.output
    assert "research contracts derived from the schemas and profiles (30" in result.output

    copy = _copy_schemas(tmp_path)
    stale = copy / "research" / "limited.patient.avsc"
    stale.write_text(stale.read_text("utf-8").replace("Keyed HMAC", "HMAC"), encoding="utf-8")
    (copy / "research" / "safe-harbor.order.avsc").unlink()
    # An identified change the contracts were not regenerated for.
    observation = json.loads((copy / "observation.avsc").read_text("utf-8"))
    [code] = [f for f in observation["fields"] if f["name"] == "code"]
    code["doc"] = "changed"
    (copy / "observation.avsc").write_text(json.dumps(observation), encoding="utf-8")

    result = runner.invoke(app, ["schemas", "check", "--schemas", str(copy)])
    assert result.exit_code == 1
    output = " ".join(result.output.split())
    assert "limited.patient.avsc: differs from its derivation" in output
    assert "safe-harbor.order.avsc: missing" in output
    for profile in PROFILES:
        assert f"{profile}.observation.avsc: differs from its derivation" in output


def test_schemas_check_reads_released_research_contracts(tmp_path: Path) -> None:
    """A release that published research contracts: the current ones must read them."""
    released = tmp_path / "released"
    shutil.copytree(SCHEMAS / "released" / "v1", released / "v1")
    (released / "v2" / "research").mkdir(parents=True)
    contract = json.loads((SCHEMAS / "research" / "kr-pseudonym.patient.avsc").read_text("utf-8"))
    for field in contract["fields"]:
        if field["name"] == "birth_year":
            field["type"] = ["null", "string"]
    (released / "v2" / "research" / "kr-pseudonym.patient.avsc").write_text(json.dumps(contract))
    (released / "v2" / "research" / "gone.patient.avsc").write_text(json.dumps(contract))

    result = runner.invoke(app, ["schemas", "check", "--released", str(released)])
    assert result.exit_code == 1
    output = " ".join(result.output.split())
    assert "kr-pseudonym.patient: birth_year: writer type string matches no reader branch" in output
    assert "gone.patient: schema: released research contract is gone" in output


def test_values_of_a_released_research_contract_resolve_to_the_current_one(tmp_path: Path) -> None:
    older = json.loads((SCHEMAS / "research" / "limited.patient.avsc").read_text("utf-8"))
    older["fields"] = [f for f in older["fields"] if f["name"] != "sex"]
    (tmp_path / "v9" / "research").mkdir(parents=True)
    (tmp_path / "v9" / "research" / "limited.patient.avsc").write_text(json.dumps(older))
    writers = codec.released_writers(tmp_path)
    [(writer, reader)] = writers.values()
    assert writer.policy == older[codec.POLICY_PROPERTY]
    assert reader == codec.published_contracts()["limited"]["Patient"].parsed


def _research_outputs(profile: str) -> list[tuple[Any, dict[str, Any]]]:
    """(output, research record as the engine made it) of every golden message through the
    fused parse step with de-identification."""
    deid = DeidSettings(Policy.load(profile), KEY, leak_check=True)
    out = []
    for case in CASES:
        value = codec.encode("RawMessage", golden_envelope(case))
        for output in parse_step(None, value, SEOUL, deid):
            if output.topic_id.startswith("research."):
                out.append((output, codec.decode(output.value)[1]))
            else:
                assert output.topic_id == topics.EVENTS, (case, output.headers)
    return out


@pytest.mark.parametrize("profile", PROFILES)
def test_apache_avro_reads_research_records_with_only_the_published_contract(profile: str) -> None:
    policy = Policy.load(profile)
    outputs = _research_outputs(profile)
    assert {o.topic_id for o, _ in outputs} >= {"research.patient", "research.observation"}
    for output, decoded in outputs:
        contract, record = published_contracts.decode(output.value, profile)
        event_type = dict(output.headers)[codec.EVENT_TYPE_HEADER].decode()
        assert contract.name == event_type and output.topic_id == topics.research(event_type)
        assert contract.other_props[codec.POLICY_PROPERTY] == policy.digest
        assert record == decoded  # what hl7bus's own codec reads
        actions = policy.actions[event_type]
        assert set(record) == {
            n for n in codec.schema(event_type).phi_classes() if kept(n, actions)
        }
        assert record["deid_policy"] == policy.digest
        if event_type == "Patient":
            assert "national_id" not in record and "family_name" not in record


def test_research_records_are_smaller_and_identified_readers_resolve_them() -> None:
    """The dropped fields are no longer written (not even as null branches), and a consumer
    that holds only the identified schema still reads a research record by Avro resolution
    (same record name): the dropped fields come back as their defaults."""
    policy = Policy.load("kr-pseudonym")
    outputs = _research_outputs("kr-pseudonym")
    for output, record in outputs:
        event_type = dict(output.headers)[codec.EVENT_TYPE_HEADER].decode()
        identified = codec.schema(event_type)
        contract = research_schema(policy, event_type)
        as_identified = codec.encode_single_object(event_type, record)
        dropped = len(identified.definition["fields"]) - len(contract.definition["fields"])
        assert len(output.value) == len(as_identified) - dropped  # one null-branch byte each
        body = io.BytesIO(output.value[10:])
        resolved = fastavro.schemaless_reader(body, contract.parsed, identified.parsed)
        assert isinstance(resolved, dict)
        assert resolved == {n: record.get(n) for n in identified.phi_classes()}


def test_file_names() -> None:
    assert file_name(Policy.load("safe-harbor"), "Patient") == "safe-harbor.patient.avsc"
    data = {"events": {"Patient": {"event_id": "keep"}}}
    assert file_name(Policy.from_data(data, "/etc/hl7bus/our policy.yaml"), "Patient") == (
        "our-policy.patient.avsc"
    )
