"""Shared fixtures: the real Kafka broker, the real PostgreSQL server and per-test unique names
(docs/architecture.md, Real parts in tests)."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from postgres_server import ServerError, fresh_database, temporary_server, url_of

from hl7bus.connectors.warehouse.config import WarehouseConfig
from hl7bus.connectors.warehouse.database import open_engine
from hl7bus.connectors.warehouse.engine import Engine
from hl7bus.ops.local_kafka import BrokerInfo, temporary_broker

BOOTSTRAP_ENV = "HL7BUS_KAFKA_BOOTSTRAP"
POSTGRES_URL_ENV = "HL7BUS_TEST_POSTGRES_URL"


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of a real Kafka broker for the whole session.

    ``HL7BUS_KAFKA_BOOTSTRAP`` points the tests at an already running broker. Otherwise the
    launcher starts one on free ports with its data in a pytest temp dir (the jars come
    from the shared cache) and stops it at session end. A broker that cannot start fails
    the tests with the launcher's error; nothing is skipped.
    """
    external = os.environ.get(BOOTSTRAP_ENV, "").strip()
    if external:
        yield external
        return
    with temporary_broker(tmp_path_factory.mktemp("kafka"), name="session") as broker:
        yield broker.bootstrap


@pytest.fixture(scope="session")
def kafka_sasl_ssl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerInfo]:
    """A second real broker whose clients' listener speaks SASL_SSL (SCRAM-SHA-512, a throwaway
    CA): ``.sasl_ssl`` has its address, CA file and credentials, ``.bootstrap`` the PLAINTEXT
    listener for a test's own setup and checks. Started only by the tests that ask for it, so
    the session broker stays as quick to start as before.
    """
    with temporary_broker(
        tmp_path_factory.mktemp("kafka-sasl-ssl"), name="sasl-ssl", sasl_ssl=True
    ) as broker:
        yield broker


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a real PostgreSQL server's maintenance database for the whole session.

    ``HL7BUS_TEST_POSTGRES_URL`` points the tests at an already running server (a superuser
    URL: tests create and drop their own databases). Otherwise a throwaway cluster is started
    from Debian's server binaries (tests/postgres_server.py) and stopped at session end. A
    server that cannot start fails the tests with its output and log; nothing is skipped.
    """
    external = os.environ.get(POSTGRES_URL_ENV, "").strip()
    if external:
        yield external
        return
    try:
        with temporary_server() as url:
            yield url
    except ServerError as exc:
        pytest.fail(f"PostgreSQL for the tests: {exc}", pytrace=False)


@pytest.fixture(params=["duckdb", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An empty warehouse, once on DuckDB and once on PostgreSQL (a database of its own, the
    OMOP tables in schema cdm): the warehouse tests run the same cases against both."""
    if request.param == "duckdb":
        opened = open_engine(WarehouseConfig(path=tmp_path / "warehouse.duckdb"))
        yield opened
        opened.close()
        return
    server = request.getfixturevalue("postgres_url")
    with fresh_database(server, "warehouse") as conninfo:
        opened = open_engine(WarehouseConfig(url=url_of(conninfo), cdm_schema="cdm"))
        try:
            yield opened
        finally:
            opened.close()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No HL7BUS_* variable of the calling shell leaks into a config test."""
    for name in list(os.environ):
        if name.startswith("HL7BUS_"):
            monkeypatch.delenv(name)


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A topic / consumer-group name prefix no other test (or earlier run) uses.

    The test's name is kept, shortened and made legal for Kafka, so a stray topic on a
    shared broker says where it came from.
    """
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name).strip("-.")[:60]
    return f"t-{readable}-{uuid.uuid4().hex[:12]}"
