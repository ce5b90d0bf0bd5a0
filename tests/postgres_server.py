"""A throwaway PostgreSQL server for the tests: Debian's server binaries, a cluster in a temp dir.

initdb refuses to run as root, so as root the cluster belongs to the ``postgres`` OS user and
its commands run through ``runuser``. The server listens on a free port on 127.0.0.1 only, with
fsync off: its data is thrown away at the end anyway.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from hl7bus.ops.processes import free_port

OS_USER = "postgres"
_DEBIAN_ROOT = Path("/usr/lib/postgresql")


class ServerError(RuntimeError):
    """The server could not be set up or started; the message carries its output and log."""


def find_bindir() -> Path:
    """The newest Debian PostgreSQL server's bin folder, else the one holding pg_ctl on PATH."""

    def major(pg_ctl: Path) -> int:
        version = pg_ctl.parent.parent.name
        return int(version) if version.isdigit() else 0

    installed = sorted(_DEBIAN_ROOT.glob("*/bin/pg_ctl"), key=major)
    if installed:
        return installed[-1].parent
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).resolve().parent
    raise ServerError(
        "no PostgreSQL server found (pg_ctl); `make postgres` installs Debian's postgresql"
    )


def _run(command: list[str], what: str, log: Path | None = None) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        server_log = log.read_text(errors="replace") if log and log.exists() else ""
        raise ServerError(
            f"{what} failed ({done.returncode}): {' '.join(command)}\n"
            f"{done.stdout}{done.stderr}\n--- server log ---\n{server_log}"
        )


class Server:
    """One throwaway cluster: its folder, port and URL. `stop` and `start` take the server down
    and up again on the same port and data (an outage test's database)."""

    def __init__(self) -> None:
        self.bindir = find_bindir()
        # Not under pytest's basetemp: its folders are private to the user running pytest.
        self.root = Path(tempfile.mkdtemp(prefix="hl7bus-pg-"))
        self.data, self.sockets = self.root / "data", self.root / "run"
        self.log = self.root / "server.log"
        self.prefix: list[str] = []
        self.port = free_port()
        self.running = False
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def create(self) -> None:
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam(OS_USER)
            except KeyError as exc:
                raise ServerError(f"no OS user {OS_USER!r} to own the test cluster") from exc
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self.prefix = ["runuser", "-u", OS_USER, "--"]
        self.sockets.mkdir()
        if self.prefix:
            shutil.chown(self.sockets, OS_USER, OS_USER)
        _run(
            [
                *self.prefix,
                str(self.bindir / "initdb"),
                "--pgdata",
                str(self.data),
                "--username",
                "postgres",
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--no-sync",
            ],
            "initdb",
        )

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.sockets} -c fsync=off -c full_page_writes=off"
        )
        _run(
            [
                *self.prefix,
                str(self.bindir / "pg_ctl"),
                "start",
                "--pgdata",
                str(self.data),
                "--log",
                str(self.log),
                "--wait",
                "--timeout",
                "60",
                "--options",
                options,
            ],
            "pg_ctl start",
            self.log,
        )
        self.running = True

    def stop(self) -> None:
        """Stop at once: open sessions are cut off mid-transaction (`--mode fast`)."""
        _run(
            [
                *self.prefix,
                str(self.bindir / "pg_ctl"),
                "stop",
                "--pgdata",
                str(self.data),
                "--mode",
                "fast",
            ],
            "pg_ctl stop",
            self.log,
        )
        self.running = False

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def temporary_server() -> Iterator[str]:
    """Start a fresh cluster; yield the URL of its ``postgres`` database; stop and delete it."""
    with stoppable_server() as server:
        yield server.url


@contextmanager
def stoppable_server() -> Iterator[Server]:
    """A fresh cluster of its own, started; the test may stop and start it; stopped (when
    running) and deleted after."""
    server = Server()
    try:
        server.create()
        server.start()
        yield server
    finally:
        try:
            if server.running:
                server.stop()
        finally:
            server.remove()


@contextmanager
def fresh_database(server_url: str, label: str = "t") -> Iterator[str]:
    """A new, empty database on the server for one test; yields its conninfo, drops it after."""
    name = f"{re.sub(r'[^a-z0-9_]', '_', label.lower())[:40]}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(server_url, dbname=name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def url_of(conninfo: str) -> str:
    """A conninfo (as fresh_database yields it) as the URL warehouse.url takes."""
    parts = conninfo_to_dict(conninfo)
    return f"postgresql://{parts['user']}@{parts['host']}:{parts['port']}/{parts['dbname']}"
