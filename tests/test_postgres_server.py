"""The throwaway PostgreSQL server of the tests: it serves, and a failed start says why."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

import postgres_server
import psycopg
import pytest
from postgres_server import ServerError, fresh_database, temporary_server


@pytest.mark.postgres
def test_fresh_database_is_empty_and_dropped_after(postgres_url: str) -> None:
    with fresh_database(postgres_url, "probe") as conninfo:
        with psycopg.connect(conninfo) as conn:
            name = conn.execute("SELECT current_database()").fetchone()
            tables = conn.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
            ).fetchone()
        assert tables == (0,)
    assert name is not None
    with psycopg.connect(postgres_url) as admin:
        left = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", name).fetchone()
    assert left is None


@pytest.mark.postgres
def test_a_server_that_cannot_start_fails_with_its_log(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken: int = squatter.getsockname()[1]
        monkeypatch.setattr(postgres_server, "free_port", lambda: taken)
        made: list[Path] = []
        mkdtemp = tempfile.mkdtemp

        def recorded_mkdtemp(prefix: str) -> str:
            made.append(Path(mkdtemp(prefix=prefix)))
            return str(made[-1])

        monkeypatch.setattr(tempfile, "mkdtemp", recorded_mkdtemp)
        with pytest.raises(ServerError) as failure, temporary_server():
            pytest.fail("the server started on a port that is taken")
    message = str(failure.value)
    assert "pg_ctl start failed" in message
    assert "--- server log ---" in message
    assert "could not bind" in message or "could not create" in message
    assert len(made) == 1
    assert not made[0].exists(), "the cluster's temp dir is removed after a failed start"
