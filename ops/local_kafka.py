"""A local single-node Apache Kafka (KRaft) broker for development and tests.

The broker runs from the jars Maven Central serves for ``org.apache.kafka:kafka_2.13``
(docs/architecture.md, Real parts in tests): Maven resolves them once into a cache, then a
plain ``java`` process runs ``kafka.Kafka`` on a rendered ``server.properties``. No Kafka
distribution, Docker or ZooKeeper is involved.

Layout on disk::

    <home>/kafka-<version>/pom.xml         copy of ops/kafka/pom.xml that was resolved
    <home>/kafka-<version>/libs/*.jar      the broker's classpath
    <home>/kafka-<version>/resolved.json   completion marker (POM hash + jar list)
    <home>/kafka-<version>/maven.log       output of the last Maven run
    <data_root>/<name>/data/               Kafka log.dirs (kept by down() and kill())
    <data_root>/<name>/broker.log          broker log (log4j) and the JVM's stdout/stderr
    <data_root>/<name>/server.properties   rendered from ops/kafka/server.properties.template
    <data_root>/<name>/state.json          pid, bootstrap, ports of the running broker
    <data_root>/<name>/instance.json       ports of the last start, reused when free

``data_root`` defaults to ``<home>/broker``; tests point it at a temporary directory and
keep sharing the jar cache.

The Kafka version has one source of truth: the ``kafka.version`` property in
``ops/kafka/pom.xml``.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import string
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hl7bus.connectors.paths import default_home

__all__ = [
    "BrokerInfo",
    "BrokerStatus",
    "LocalKafkaConfig",
    "LocalKafkaError",
    "default_home",
    "down",
    "ensure_jars",
    "kafka_version",
    "kill",
    "running_bootstrap",
    "status",
    "temporary_broker",
    "up",
]

KAFKA_RESOURCES = Path(__file__).with_name("kafka")
POM = KAFKA_RESOURCES / "pom.xml"
SERVER_TEMPLATE = KAFKA_RESOURCES / "server.properties.template"
LOG4J_CONFIG = KAFKA_RESOURCES / "log4j2.properties"

MIN_JAVA = 17
_MAVEN_TIMEOUT_S = 900.0
_LOG_TAIL_LINES = 20
_POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}


class LocalKafkaError(RuntimeError):
    """The local broker could not be provisioned, started or stopped; the message says why."""


class LocalKafkaConfig(BaseModel):
    """Where and how the local broker runs."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(
        default="127.0.0.1",
        description="Address the broker listens on and advertises to clients. A concrete "
        "address, not a wildcard, because clients connect to what is advertised.",
    )
    port: int = Field(
        default=9092,
        ge=0,
        le=65535,
        description="Client (PLAINTEXT) port. 0 picks a free port. When the port is taken, "
        "the broker starts on another free port and BrokerInfo.notes says so.",
    )
    controller_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="KRaft controller port. 0 reuses the previous start's port when free, "
        "else picks a free one.",
    )
    heap: str = Field(
        default="512m",
        pattern=r"^[1-9][0-9]*[kKmMgG]?$",
        description="Maximum JVM heap (java -Xmx), e.g. 512m or 1g.",
    )
    home: Path = Field(
        default_factory=default_home,
        description="Cache directory; the resolved jars live in <home>/kafka-<version>/libs.",
    )
    data_root: Path | None = Field(
        default=None,
        description="Directory holding one sub-directory per named broker instance "
        "(data, log, state). Defaults to <home>/broker.",
    )
    name: str = Field(
        default="default",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="Instance name; each name has its own data directory and state.",
    )
    start_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="Seconds to wait for a started broker to answer a metadata request.",
    )

    @field_validator("host")
    @classmethod
    def _concrete_host(cls, value: str) -> str:
        if value.strip("[]") in {"", "0.0.0.0", "::"}:
            raise ValueError(
                "must be a concrete address such as 127.0.0.1: it is also the address "
                "advertised to clients, and a wildcard cannot be connected to"
            )
        return value.strip("[]")

    @field_validator("home", "data_root")
    @classmethod
    def _expand_user(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser()

    @property
    def instance_dir(self) -> Path:
        root = self.data_root if self.data_root is not None else self.home / "broker"
        return (root / self.name).absolute()


@dataclass(frozen=True)
class BrokerInfo:
    """A running local broker, as recorded in its state.json."""

    name: str
    version: str
    bootstrap: str
    pid: int
    host: str
    port: int
    controller_port: int
    instance_dir: Path
    data_dir: Path
    log_file: Path
    started_at: datetime
    #: True when up() found the broker already running and started nothing.
    already_running: bool = False
    #: Human-readable remarks for the CLI to print, e.g. that the configured port was taken.
    notes: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class BrokerStatus:
    """A live broker process and whether it answers."""

    broker: BrokerInfo
    answering: bool
    #: Non-internal topic names when answering, else None.
    topics: tuple[str, ...] | None
    #: Why it did not answer, when it did not.
    error: str | None = None

    @property
    def uptime_s(self) -> float:
        return (datetime.now(UTC) - self.broker.started_at).total_seconds()


# --------------------------------------------------------------------------- version, jars


def kafka_version() -> str:
    """The Kafka version pinned in ops/kafka/pom.xml."""
    return _pom_property("kafka.version")


def _pom_property(name: str) -> str:
    try:
        root = ET.parse(POM).getroot()
    except (OSError, ET.ParseError) as exc:
        raise LocalKafkaError(f"cannot read the Kafka runtime POM {POM}: {exc}") from exc
    node = root.find(f"m:properties/m:{name}", _POM_NS)
    if node is None or not (node.text or "").strip():
        raise LocalKafkaError(f"{POM} has no <properties><{name}>")
    return (node.text or "").strip()


def _jar_cache(cfg: LocalKafkaConfig) -> Path:
    return (cfg.home / f"kafka-{kafka_version()}").absolute()


def ensure_jars(cfg: LocalKafkaConfig) -> Path:
    """Resolve the broker jars with Maven into the cache once; return the libs directory.

    A second call finds the completion marker and runs nothing. The marker records the
    POM's hash, so an edited POM (another Kafka or log4j version) resolves again.
    """
    _require_java()
    cache_dir = _jar_cache(cfg)
    libs = cache_dir / "libs"
    pom_bytes = POM.read_bytes()
    digest = hashlib.sha256(pom_bytes).hexdigest()
    if _jars_complete(cache_dir, digest):
        return libs
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Two processes (a CLI and a test session) may both find the cache cold.
    with _locked(cache_dir / ".lock"):
        if _jars_complete(cache_dir, digest):
            return libs
        mvn = _require_mvn()
        (cache_dir / "pom.xml").write_bytes(pom_bytes)
        # Holding the lock, any staging directory is a leftover of an interrupted run.
        for leftover in cache_dir.glob("libs.tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        staging = cache_dir / f"libs.tmp-{os.getpid()}"
        maven_log = cache_dir / "maven.log"
        cmd = [
            mvn, "-B", "-q", "-Dstyle.color=never",
            "-f", str(cache_dir / "pom.xml"),
            "dependency:copy-dependencies",
            f"-Dkafka.libs={staging}",
        ]  # fmt: skip
        try:
            with maven_log.open("wb") as out:
                proc = subprocess.run(
                    cmd,
                    cwd=cache_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=_MAVEN_TIMEOUT_S,
                    check=False,
                )
        except subprocess.TimeoutExpired as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise LocalKafkaError(
                f"Maven did not finish resolving the Kafka jars within {_MAVEN_TIMEOUT_S:.0f} s "
                f"(network or proxy?). Output: {maven_log}"
            ) from exc
        jars = sorted(p.name for p in staging.glob("*.jar")) if staging.is_dir() else []
        expected = f"kafka_2.13-{kafka_version()}.jar"
        if proc.returncode != 0 or expected not in jars:
            shutil.rmtree(staging, ignore_errors=True)
            what = (
                f"exited with code {proc.returncode}"
                if proc.returncode != 0
                else f"did not produce {expected}"
            )
            raise LocalKafkaError(
                f"Maven {what} while resolving the Kafka {kafka_version()} jars "
                f"({' '.join(cmd)}). Maven Central must be reachable (or mirrored in "
                f"~/.m2/settings.xml). Full output: {maven_log}\n" + _tail(maven_log, 30)
            )
        # Marker first: a crash between these steps must leave the cache cold, not "complete".
        (cache_dir / "resolved.json").unlink(missing_ok=True)
        if libs.exists():
            shutil.rmtree(libs)
        staging.rename(libs)
        marker = {
            "pom_sha256": digest,
            "kafka_version": kafka_version(),
            "jars": jars,
            "resolved_at": datetime.now(UTC).isoformat(),
        }
        _write_json(cache_dir / "resolved.json", marker)
    return libs


def _jars_complete(cache_dir: Path, digest: str) -> bool:
    marker = _read_json(cache_dir / "resolved.json")
    if marker is None or marker.get("pom_sha256") != digest:
        return False
    jars = marker.get("jars")
    libs = cache_dir / "libs"
    return isinstance(jars, list) and bool(jars) and all((libs / j).is_file() for j in jars)


# --------------------------------------------------------------------------- prerequisites


def _java_executable() -> str | None:
    # The same precedence as Kafka's own kafka-run-class.sh.
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("java")


def _require_java() -> str:
    java = _java_executable()
    if java is None:
        raise LocalKafkaError(
            f"`java` was not found on PATH (nor in $JAVA_HOME/bin). The local Kafka broker "
            f"needs Java {MIN_JAVA} or newer: install a JDK/JRE, e.g. "
            f"`apt-get install openjdk-{MIN_JAVA}-jre-headless`, or set JAVA_HOME."
        )
    major = _java_major(java)
    if major < MIN_JAVA:
        raise LocalKafkaError(
            f"{java} is Java {major}; Kafka {kafka_version()} needs Java {MIN_JAVA} or newer. "
            f"Install e.g. `openjdk-{MIN_JAVA}-jre-headless` and put it first on PATH "
            f"or set JAVA_HOME."
        )
    return java


@cache
def _java_major(java: str) -> int:
    try:
        proc = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LocalKafkaError(f"cannot run `{java} -version`: {exc}") from exc
    match = re.search(r'version "(\d+)(?:\.(\d+))?', proc.stderr + proc.stdout)
    if match is None:
        raise LocalKafkaError(
            f"cannot tell the Java version from `{java} -version`: "
            f"{(proc.stderr or proc.stdout).strip()[:200]!r}"
        )
    major = int(match.group(1))
    # Java 8 and older report "1.8.0_x".
    return int(match.group(2) or 0) if major == 1 else major


def _require_mvn() -> str:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalKafkaError(
            "`mvn` (Apache Maven) was not found on PATH. It is needed once, to download the "
            f"Kafka {kafka_version()} jars from Maven Central into the cache: install it, e.g. "
            "`apt-get install maven`, or copy a resolved cache from another machine "
            "(see ops/kafka/pom.xml)."
        )
    return mvn


# --------------------------------------------------------------------------- processes


#: Brokers this process started, so their exit is reaped instead of leaving zombies that
#: still answer os.kill(pid, 0).
_children: dict[int, subprocess.Popen[bytes]] = {}


def _pid_alive(pid: int, server_properties: Path) -> bool:
    child = _children.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _children[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else; the cmdline check below decides
    cmdline = Path(f"/proc/{pid}/cmdline")
    try:
        args = cmdline.read_bytes().split(b"\0")
    except FileNotFoundError:
        # Gone since the kill(0) above, or no procfs at all (macOS), where the pid is trusted
        # as pid files are.
        return not Path("/proc/self").exists()
    except PermissionError:
        return True
    # A recycled pid belongs to some other program; a zombie has an empty cmdline.
    return b"kafka.Kafka" in args and os.fsencode(server_properties) in args


def _wait_exit(pid: int, server_properties: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _pid_alive(pid, server_properties):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError as exc:
        raise LocalKafkaError(f"not allowed to signal broker pid {pid}: {exc}") from exc


# --------------------------------------------------------------------------- ports


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _port_free(host: str, port: int) -> bool:
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        # Java sets SO_REUSEADDR on its server sockets, so a port whose old connections
        # linger in TIME_WAIT is free for the broker and must count as free here too.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str, avoid: set[int]) -> int:
    for _ in range(50):
        with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in avoid:
            return port
    raise LocalKafkaError(f"could not find a free TCP port on {host}")


def _choose_port(host: str, wanted: int, previous: int | None, avoid: set[int]) -> int:
    for candidate in (wanted, previous):
        if candidate and candidate not in avoid and _port_free(host, candidate):
            return candidate
    return _free_port(host, avoid)


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --------------------------------------------------------------------------- files


def _state_file(cfg: LocalKafkaConfig) -> Path:
    return cfg.instance_dir / "state.json"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _tail(path: Path, lines: int, start: int = 0) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(start)
            data = handle.read()
    except FileNotFoundError:
        return f"({path} does not exist)"
    text = data.decode("utf-8", "replace").rstrip("\n")
    if not text:
        return f"({path} has no output)"
    return "\n".join(text.splitlines()[-lines:])


def _info_from_state(state: dict[str, Any], cfg: LocalKafkaConfig) -> BrokerInfo | None:
    try:
        return BrokerInfo(
            name=cfg.name,
            version=str(state["version"]),
            bootstrap=str(state["bootstrap"]),
            pid=int(state["pid"]),
            host=str(state["host"]),
            port=int(state["port"]),
            controller_port=int(state["controller_port"]),
            instance_dir=cfg.instance_dir,
            data_dir=Path(state["data_dir"]),
            log_file=Path(state["log_file"]),
            started_at=datetime.fromisoformat(state["started_at"]),
        )
    except (KeyError, TypeError, ValueError):
        return None


def _live_broker(cfg: LocalKafkaConfig) -> BrokerInfo | None:
    state = _read_json(_state_file(cfg))
    if state is None:
        return None
    info = _info_from_state(state, cfg)
    if info is None or not _pid_alive(info.pid, cfg.instance_dir / "server.properties"):
        return None
    return info


# --------------------------------------------------------------------------- probing


def _probe(bootstrap: str, timeout: float) -> tuple[str, ...]:
    """Non-internal topic names, from a metadata request; raises when nobody answers."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        # Connection refusals while the broker boots are expected; keep them off stderr.
        "log_level": 0,
        "error_cb": lambda _err: None,
    }
    admin = AdminClient(conf)
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise LocalKafkaError(f"no metadata answer from {bootstrap}: {exc}") from exc
    if not metadata.brokers:
        raise LocalKafkaError(f"{bootstrap} answered without any broker in its metadata")
    return tuple(sorted(t for t in metadata.topics if not t.startswith("__")))


def _tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- public API


def running_bootstrap(cfg: LocalKafkaConfig) -> str | None:
    """Bootstrap address of this instance's running broker, else None. No network I/O."""
    info = _live_broker(cfg)
    return None if info is None else info.bootstrap


def status(cfg: LocalKafkaConfig, timeout: float = 5.0) -> BrokerStatus | None:
    """The running broker of this instance and whether it answers; None when not running."""
    info = _live_broker(cfg)
    if info is None:
        return None
    try:
        topics = _probe(info.bootstrap, timeout)
    except LocalKafkaError as exc:
        return BrokerStatus(broker=info, answering=False, topics=None, error=str(exc))
    return BrokerStatus(broker=info, answering=True, topics=topics)


def up(cfg: LocalKafkaConfig) -> BrokerInfo:
    """Start the broker (formatting new storage) and wait until it answers metadata.

    Idempotent: when this instance already runs, waits for it to answer and returns it
    with ``already_running=True``. After a crash or kill() the stale state is replaced and
    the broker restarts on the same data (topics and records survive).
    """
    libs = ensure_jars(cfg)
    java = _require_java()
    instance = cfg.instance_dir
    instance.mkdir(parents=True, exist_ok=True)
    with _locked(instance / ".lock"):
        running = _live_broker(cfg)
        if running is not None:
            _wait_answering(running.bootstrap, running.host, running.port, cfg, None, 0)
            notes: tuple[str, ...] = (f"already running (pid {running.pid})",)
            if cfg.port and cfg.port != running.port:
                notes += (f"it listens on {running.port}, not the configured {cfg.port}",)
            return dataclasses.replace(running, already_running=True, notes=notes)
        _state_file(cfg).unlink(missing_ok=True)
        return _start(cfg, java, libs)


def _start(cfg: LocalKafkaConfig, java: str, libs: Path) -> BrokerInfo:
    instance = cfg.instance_dir
    data_dir = instance / "data"
    log_file = instance / "broker.log"
    server_properties = instance / "server.properties"
    previous = _read_json(instance / "instance.json") or {}
    last_port = previous.get("port")
    last_controller_port = previous.get("controller_port")

    # A restart prefers the previous ports so clients' bootstrap setting stays valid.
    port = _choose_port(
        cfg.host, cfg.port, last_port if isinstance(last_port, int) else None, set()
    )
    controller_port = _choose_port(
        cfg.host,
        cfg.controller_port,
        last_controller_port if isinstance(last_controller_port, int) else None,
        {port},
    )
    notes: list[str] = []
    if cfg.port and port != cfg.port:
        notes.append(f"port {cfg.port} on {cfg.host} is in use; the broker listens on {port}")

    listen_host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    rendered = string.Template(SERVER_TEMPLATE.read_text(encoding="utf-8")).substitute(
        listen_host=listen_host,
        port=port,
        controller_port=controller_port,
        data_dir=data_dir,
    )
    server_properties.write_text(rendered, encoding="utf-8")

    jvm_common = [
        java,
        f"-Xmx{cfg.heap}",
        f"-Xms{cfg.heap}",
        # The JVM options of Kafka's own launcher (kafka-run-class.sh): G1 with short pauses.
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:InitiatingHeapOccupancyPercent=35",
        "-XX:+ExplicitGCInvokesConcurrent",
        "-XX:MaxInlineLevel=15",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        # Kafka logs its own shutdown from a JVM shutdown hook; log4j's hook would close the
        # file first and divert those lines to stderr.
        "-Dlog4j2.shutdownHookEnabled=false",
        f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        f"-Dkafka.logs.dir={instance}",
        "-cp",
        f"{libs}/*",
    ]
    if not (data_dir / "meta.properties").exists():
        _format_storage(jvm_common, server_properties, log_file)

    log_start = log_file.stat().st_size if log_file.exists() else 0
    with log_file.open("ab") as log:
        proc = subprocess.Popen(
            [*jvm_common, "kafka.Kafka", str(server_properties)],
            cwd=instance,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Survives the CLI that started it and is deaf to the terminal's Ctrl-C.
            start_new_session=True,
        )
    _children[proc.pid] = proc
    bootstrap = _hostport(cfg.host, port)
    try:
        _wait_answering(bootstrap, cfg.host, port, cfg, proc, log_start)
    except BaseException:
        # A broker that never became ready must not linger holding the ports and data lock.
        proc.kill()
        proc.wait()
        _children.pop(proc.pid, None)
        raise

    info = BrokerInfo(
        name=cfg.name,
        version=kafka_version(),
        bootstrap=bootstrap,
        pid=proc.pid,
        host=cfg.host,
        port=port,
        controller_port=controller_port,
        instance_dir=instance,
        data_dir=data_dir,
        log_file=log_file,
        started_at=datetime.now(UTC),
        notes=tuple(notes),
    )
    _write_json(
        _state_file(cfg),
        {
            "pid": info.pid,
            "bootstrap": info.bootstrap,
            "host": info.host,
            "port": info.port,
            "controller_port": info.controller_port,
            "version": info.version,
            "data_dir": str(info.data_dir),
            "log_file": str(info.log_file),
            "started_at": info.started_at.isoformat(),
        },
    )
    _write_json(instance / "instance.json", {"port": port, "controller_port": controller_port})
    return info


def _format_storage(jvm_common: list[str], server_properties: Path, log_file: Path) -> None:
    # Kafka's Uuid.randomUuid() in Python, saving a JVM start; a leading "-" would be
    # read as a command-line option, which Kafka avoids the same way.
    cluster_id = "-"
    while cluster_id.startswith("-"):
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    cmd = [
        *jvm_common,
        "kafka.tools.StorageTool",
        "format",
        "--cluster-id",
        cluster_id,
        "--config",
        str(server_properties),
        # A start interrupted between formatting and the first run left meta.properties
        # behind in some directories only; formatting again must not fail on those.
        "--ignore-formatted",
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, check=False
    )
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr).strip()
        raise LocalKafkaError(
            f"formatting the Kafka storage failed (exit {proc.returncode}): "
            f"{' '.join(cmd)}\n{output[-3000:]}\nBroker log: {log_file}"
        )


def _wait_answering(
    bootstrap: str,
    host: str,
    port: int,
    cfg: LocalKafkaConfig,
    proc: subprocess.Popen[bytes] | None,
    log_start: int,
) -> None:
    log_file = cfg.instance_dir / "broker.log"
    deadline = time.monotonic() + cfg.start_timeout_s
    last_error = "the port never accepted a connection"
    while True:
        if proc is not None and proc.poll() is not None:
            raise LocalKafkaError(
                f"the Kafka broker exited with code {proc.returncode} during startup. "
                f"Broker log: {log_file}; its last lines:\n"
                + _tail(log_file, _LOG_TAIL_LINES, log_start)
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise LocalKafkaError(
                f"the Kafka broker at {bootstrap} did not answer a metadata request within "
                f"{cfg.start_timeout_s:g} s ({last_error}). Broker log: {log_file}; "
                f"its last lines:\n" + _tail(log_file, _LOG_TAIL_LINES, log_start)
            )
        # Only ask for metadata once the port accepts, so the client has no refusals to log.
        if _tcp_open(host, port):
            try:
                _probe(bootstrap, timeout=max(0.5, min(3.0, remaining)))
            except LocalKafkaError as exc:
                last_error = str(exc)
            else:
                return
        time.sleep(0.2)


def down(cfg: LocalKafkaConfig, timeout: float = 30.0) -> bool:
    """Stop the broker (SIGTERM, then SIGKILL after ``timeout``); keep its data.

    Returns False when it was not running. state.json is removed either way.
    """
    with _locked(cfg.instance_dir / ".lock"):
        info = _live_broker(cfg)
        if info is not None:
            server_properties = cfg.instance_dir / "server.properties"
            _signal(info.pid, signal.SIGTERM)
            if not _wait_exit(info.pid, server_properties, timeout):
                _signal(info.pid, signal.SIGKILL)
                if not _wait_exit(info.pid, server_properties, 10.0):
                    raise LocalKafkaError(
                        f"broker pid {info.pid} survived SIGKILL; see {info.log_file}"
                    )
        _state_file(cfg).unlink(missing_ok=True)
        return info is not None


def kill(cfg: LocalKafkaConfig) -> bool:
    """SIGKILL the broker, as a crash would, for fault tests.

    Leaves state.json behind (stale) as a crash does; the next up() notices and restarts
    on the same data. Returns False when it was not running.
    """
    with _locked(cfg.instance_dir / ".lock"):
        info = _live_broker(cfg)
        if info is None:
            return False
        _signal(info.pid, signal.SIGKILL)
        if not _wait_exit(info.pid, cfg.instance_dir / "server.properties", 10.0):
            raise LocalKafkaError(f"broker pid {info.pid} survived SIGKILL")
        return True


@contextlib.contextmanager
def temporary_broker(
    data_root: Path,
    name: str = "test",
    *,
    home: Path | None = None,
    heap: str = "512m",
    start_timeout_s: float = 60.0,
) -> Iterator[BrokerInfo]:
    """A broker on free ports with its data under ``data_root``, stopped on exit.

    The jars come from the shared cache in ``home`` (default_home() when None), so only the
    first use on a machine pays for Maven.
    """
    cfg = LocalKafkaConfig(
        port=0,
        controller_port=0,
        heap=heap,
        home=home if home is not None else default_home(),
        data_root=data_root,
        name=name,
        start_timeout_s=start_timeout_s,
    )
    info = up(cfg)
    try:
        yield info
    finally:
        try:
            down(cfg, timeout=15.0)
        except LocalKafkaError:
            kill(cfg)
