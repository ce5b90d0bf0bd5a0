"""`kafka.client`: one settings model for every Kafka client. Each key reaches the confluent
clients (librdkafka properties) and the worker's faust/aiokafka app, or is marked as tuning
librdkafka only, or is refused when the config loads with an error naming kafka.client.<key>.
The same settings against a real SASL_SSL broker: tests/test_kafka_sasl_ssl.py."""

from __future__ import annotations

import secrets
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hl7bus.connectors.kafka_clients import KafkaConfig, base_config
from hl7bus.connectors.kafka_settings import LIBRDKAFKA_ONLY, ClientSettings, KafkaSettingsError
from hl7bus.ops import config
from hl7bus.ops.local_kafka import sasl_ssl
from hl7bus.schemas.datafile import DataFileError
from hl7bus.schemas.topics import TopicCatalog, TopicsConfig
from hl7bus.streams import runtime, worker_config
from hl7bus.streams.broker_auth import BrokerAuth
from hl7bus.streams.deid import Policy, Pseudonymizer

pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local broker's throwaway CA and certificate, and the key encrypted with `secret`."""
    directory = tmp_path_factory.mktemp("pki")
    keystore, _ = sasl_ssl.ensure_material(directory, "127.0.0.1")
    key = directory / "client.key"
    subprocess.run(
        ["openssl", "pkey", "-in", keystore, "-aes256", "-passout", "pass:secret", "-out", key],
        check=True,
        capture_output=True,
    )
    return sasl_ssl.material_dir(directory)


def sasl_ssl_settings(pki: Path, **more: str) -> dict[str, str]:
    return {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "bus",
        "sasl.password": "hunter2",
        "ssl.ca.location": str(pki / "ca.pem"),
        **more,
    }


def load_error(tmp_path: Path, client: dict[str, Any]) -> str:
    path = tmp_path / "hl7bus.yaml"
    lines = ["kafka:", "  client:"] + [f"    {k}: {v!r}" for k, v in client.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataFileError) as caught:
        config.load(path)
    return str(caught.value)


# How each key shows in what the worker's client gets (BrokerAuth), given the SASL_SSL
# settings of sasl_ssl_settings() plus that key where the value is not None.
Check = Callable[[BrokerAuth], bool]
REACHES_THE_WORKER: dict[str, tuple[str | None, Check]] = {
    "security.protocol": (None, lambda a: a.protocol == "SASL_SSL"),
    "sasl.mechanism": (None, lambda a: a.sasl_mechanism == "SCRAM-SHA-512"),
    "sasl.username": (None, lambda a: a.username == "bus"),
    "sasl.password": (None, lambda a: a.password == "hunter2"),
    "ssl.ca.location": (
        None,
        lambda a: (
            a.ssl_context is not None
            and any(
                ("commonName", "hl7bus local Kafka CA") in rdn
                for cert in a.ssl_context.get_ca_certs()
                for rdn in cert["subject"]
            )
        ),
    ),
    "ssl.endpoint.identification.algorithm": (
        "none",
        lambda a: a.ssl_context is not None and not a.ssl_context.check_hostname,
    ),
    "client.id": ("bus-7", lambda a: a.client_id == "bus-7"),
}
# ssl.certificate.location, ssl.key.location and ssl.key.password are loaded into the TLS
# context, which does not show them: test_client_certificate_reaches_the_worker.
CLIENT_CERTIFICATE = ("ssl.certificate.location", "ssl.key.location", "ssl.key.password")


def test_every_key_reaches_the_worker_or_is_marked_confluent_only() -> None:
    keys = {f.alias or name for name, f in ClientSettings.model_fields.items()}
    assert keys == set(REACHES_THE_WORKER) | set(CLIENT_CERTIFICATE) | set(LIBRDKAFKA_ONLY)
    for key in LIBRDKAFKA_ONLY:
        description = ClientSettings.model_fields[key.replace(".", "_")].description or ""
        assert "confluent clients only" in description


@pytest.mark.parametrize("key", sorted(REACHES_THE_WORKER))
def test_key_reaches_both_client_stacks(key: str, pki: Path) -> None:
    value, reached = REACHES_THE_WORKER[key]
    given = sasl_ssl_settings(pki, **({key: value} if value is not None else {}))
    settings = ClientSettings(**given)
    assert reached(settings.broker_auth())
    assert settings.librdkafka()[key] == given[key]


def test_client_certificate_reaches_the_worker(pki: Path) -> None:
    given = sasl_ssl_settings(
        pki,
        **{
            "ssl.certificate.location": str(pki / "broker.crt"),
            "ssl.key.location": str(pki.parent / "client.key"),
            "ssl.key.password": "secret",
        },
    )
    properties = ClientSettings(**given).librdkafka()
    assert {k: properties[k] for k in CLIENT_CERTIFICATE} == {
        k: given[k] for k in CLIENT_CERTIFICATE
    }
    assert ClientSettings(**given).broker_auth().ssl_context is not None
    # A wrong key password fails where the worker loads the key: it reached it.
    wrong = ClientSettings(**{**given, "ssl.key.password": "guess"})
    with pytest.raises(KafkaSettingsError, match=r"kafka\.client\.ssl\.key\.password") as caught:
        wrong.broker_auth()
    assert "guess" not in str(caught.value)


def test_unreadable_ca_file_is_named(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n", encoding="utf-8")
    settings = ClientSettings(**{"security.protocol": "SSL", "ssl.ca.location": str(bogus)})
    with pytest.raises(KafkaSettingsError, match=r"kafka\.client\.ssl\.ca\.location"):
        settings.broker_auth()


def test_confluent_clients_get_librdkafka_properties(pki: Path) -> None:
    cfg = KafkaConfig(client=ClientSettings(**sasl_ssl_settings(pki, debug="security")))
    assert base_config(cfg, "b:9093") == {
        "bootstrap.servers": "b:9093",
        **sasl_ssl_settings(pki),
        "ssl.endpoint.identification.algorithm": "https",
        "debug": "security",
    }
    assert base_config(KafkaConfig(), "b:9092") == {
        "bootstrap.servers": "b:9092",
        "security.protocol": "PLAINTEXT",
        "ssl.endpoint.identification.algorithm": "https",
    }


def test_worker_app_gets_the_credentials(pki: Path, tmp_path: Path) -> None:
    """faust's own translation (credentials_to_aiokafka_auth) is what its aiokafka consumer,
    producer and topic admin are built with: the test fails if faust changes it."""
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    def app_for(given: dict[str, str]) -> Any:
        return runtime.build_app(
            worker_config.WorkerConfig(data_dir=tmp_path, metrics_port=None),
            "127.0.0.1:9093",
            TopicCatalog.load(TopicsConfig()),
            Policy.load("kr-pseudonym"),
            Pseudonymizer(secrets.token_bytes(32), "k1"),
            False,
            auth=ClientSettings(**given).broker_auth(),
        )

    app = app_for(sasl_ssl_settings(pki, **{"client.id": "bus-7"}))
    aiokafka = credentials_to_aiokafka_auth(app.conf.broker_credentials, app.conf.ssl_context)
    assert aiokafka["security_protocol"] == "SASL_SSL"
    assert aiokafka["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (aiokafka["sasl_plain_username"], aiokafka["sasl_plain_password"]) == ("bus", "hunter2")
    assert isinstance(aiokafka["ssl_context"], ssl.SSLContext)
    assert app.conf.broker_client_id == "bus-7"

    tls = app_for({"security.protocol": "SSL", "ssl.ca.location": str(pki / "ca.pem")})
    aiokafka = credentials_to_aiokafka_auth(tls.conf.broker_credentials, tls.conf.ssl_context)
    assert aiokafka["security_protocol"] == "SSL"
    assert isinstance(aiokafka["ssl_context"], ssl.SSLContext)

    plain = app_for({})
    aiokafka = credentials_to_aiokafka_auth(plain.conf.broker_credentials, plain.conf.ssl_context)
    assert aiokafka == {"security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize(
    ("client", "expected"),
    [
        (
            {"compression.type": "lz4"},
            "kafka.client.compression.type = 'lz4': the worker's Kafka client (faust/aiokafka) "
            "has no equivalent of this librdkafka property, so it cannot reach the worker",
        ),
        ({"bootstrap.servers": "b:1"}, "kafka.client.bootstrap.servers = 'b:1': set by the bus"),
        ({"acks": "1"}, "kafka.client.acks = '1': set by the bus for every client: the bus "),
        (
            {"security.protocol": "SASL_SSL", "sasl.mechanism": "GSSAPI"},
            "kafka.client.sasl.mechanism = 'GSSAPI': GSSAPI needs settings the worker's",
        ),
        (
            {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", "sasl.password": "x"},
            "kafka.client.sasl.username = (missing): required with SASL_SSL",
        ),
        (
            {"sasl.username": "bus"},
            "kafka.client.sasl.username = 'bus': set, but security.protocol is PLAINTEXT",
        ),
        (
            {"security.protocol": "SASL_PLAINTEXT", "ssl.endpoint.identification.algorithm": "none"}
            | {"sasl.mechanism": "PLAIN", "sasl.username": "bus", "sasl.password": "x"},
            "kafka.client.ssl.endpoint.identification.algorithm = 'none': set, but "
            "security.protocol is SASL_PLAINTEXT (it needs SSL or SASL_SSL)",
        ),
        (
            {"security.protocol": "SSL", "ssl.ca.location": "/nonexistent/ca.pem"},
            "kafka.client.ssl.ca.location = '/nonexistent/ca.pem': Value error, no such file",
        ),
        ({"security.protocol": "TLS"}, "kafka.client.security.protocol = 'TLS': Input should be"),
    ],
)
def test_refused_keys_are_named(tmp_path: Path, client: dict[str, Any], expected: str) -> None:
    assert expected in load_error(tmp_path, client)


def test_secrets_never_appear_in_errors(tmp_path: Path) -> None:
    message = load_error(
        tmp_path,
        {
            "sasl.password": "hunter2",
            "sasl.oauthbearer.client.secret": "s3cret",
            "ssl.keystore.password": "k3y",
        },
    )
    for key in ("sasl.password", "sasl.oauthbearer.client.secret", "ssl.keystore.password"):
        assert f"kafka.client.{key} = '********'" in message
    for secret in ("hunter2", "s3cret", "k3y"):
        assert secret not in message


def test_environment_sets_client_as_json(monkeypatch: pytest.MonkeyPatch, pki: Path) -> None:
    import json

    monkeypatch.setenv("HL7BUS_KAFKA_CLIENT", json.dumps(sasl_ssl_settings(pki)))
    settings = config.load(None)
    assert settings.kafka.client.security_protocol == "SASL_SSL"
    shown = config.effective(settings)["kafka"]["client"]
    assert shown["sasl.password"] == "********"
    assert shown["sasl.mechanism"] == "SCRAM-SHA-512"


def test_worker_refuses_unusable_tls_files_at_start(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n", encoding="utf-8")
    env = {
        "HL7BUS_KAFKA_CLIENT": f'{{"security.protocol": "SSL", "ssl.ca.location": "{bogus}"}}',
        "HL7BUS_DEID_KEY": secrets.token_hex(32),
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(
        [sys.executable, "-m", "hl7bus.ops.cli", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "kafka.client.ssl.ca.location cannot be used" in result.stderr.replace("\n", " ")
