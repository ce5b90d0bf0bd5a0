"""The broker's classpath: the Kafka jars Maven resolves once into the cache, and the Java and
Maven that needs.

The Kafka version has one source of truth: the ``kafka.version`` property in
``ops/kafka/pom.xml``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from hl7bus.ops.local_kafka.config import LocalKafkaConfig
from hl7bus.ops.local_kafka.errors import LocalKafkaError
from hl7bus.ops.local_kafka.files import locked, read_json, tail, write_json

POM = Path(__file__).parent.parent / "kafka" / "pom.xml"

MIN_JAVA = 17
_MAVEN_TIMEOUT_S = 900.0
_POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}


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
    require_java()
    cache_dir = _jar_cache(cfg)
    libs = cache_dir / "libs"
    pom_bytes = POM.read_bytes()
    digest = hashlib.sha256(pom_bytes).hexdigest()
    if _jars_complete(cache_dir, digest):
        return libs
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Two processes (a CLI and a test session) may both find the cache cold.
    with locked(cache_dir / ".lock"):
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
                f"~/.m2/settings.xml). Full output: {maven_log}\n" + tail(maven_log, 30)
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
        write_json(cache_dir / "resolved.json", marker)
    return libs


def _jars_complete(cache_dir: Path, digest: str) -> bool:
    marker = read_json(cache_dir / "resolved.json")
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


def require_java() -> str:
    """The ``java`` to run the broker with; raises unless it is Java 17 or newer."""
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
