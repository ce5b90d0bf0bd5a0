"""The broker's JVM: its command line, formatting its storage, starting it as a process of its
own, and telling whether a recorded pid is still that broker.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

from hl7bus.ops.local_kafka.errors import LocalKafkaError

LOG4J_CONFIG = Path(__file__).parent.parent / "kafka" / "log4j2.properties"

#: Brokers this process started, so their exit is reaped instead of leaving zombies that
#: still answer os.kill(pid, 0).
_children: dict[int, subprocess.Popen[bytes]] = {}


def jvm_command(java: str, heap: str, instance: Path, libs: Path) -> list[str]:
    """``java`` and its options for any Kafka main class; the class and its arguments follow."""
    return [
        java,
        f"-Xmx{heap}",
        f"-Xms{heap}",
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


def format_storage(jvm_common: list[str], server_properties: Path, log_file: Path) -> None:
    """Format new KRaft storage under a fresh cluster id (Kafka's StorageTool)."""
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


def spawn(
    jvm_common: list[str], server_properties: Path, instance: Path, log_file: Path
) -> subprocess.Popen[bytes]:
    """Start ``kafka.Kafka`` on ``server_properties``, its output appended to ``log_file``."""
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
    return proc


def discard(proc: subprocess.Popen[bytes]) -> None:
    """Kill and reap a broker :func:`spawn` started."""
    proc.kill()
    proc.wait()
    _children.pop(proc.pid, None)


def pid_alive(pid: int, server_properties: Path) -> bool:
    """Whether ``pid`` is a live broker running on ``server_properties``."""
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


def wait_exit(pid: int, server_properties: Path, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for the broker to exit; False when it did not."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid, server_properties):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def send_signal(pid: int, sig: signal.Signals) -> None:
    """Signal the broker; one that is already gone is not an error."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError as exc:
        raise LocalKafkaError(f"not allowed to signal broker pid {pid}: {exc}") from exc
