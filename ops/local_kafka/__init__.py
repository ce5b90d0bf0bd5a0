"""A local single-node Apache Kafka (KRaft) broker for development and tests.

The broker runs from the jars Maven Central serves for ``org.apache.kafka:kafka_2.13``
(docs/architecture.md, Real parts in tests): Maven resolves them once into a cache, then a
plain ``java`` process runs ``kafka.Kafka`` on a rendered ``server.properties``. No Kafka
distribution, Docker or ZooKeeper is involved.

One job a file: :mod:`.config` (:class:`LocalKafkaConfig`), :mod:`.jars` (the Kafka version,
the jar cache, the Java and Maven it needs), :mod:`.ports` (choosing the ports),
:mod:`.server_properties` (the broker's configuration and listeners), :mod:`.sasl_ssl` (the
optional SASL_SSL listener: its throwaway CA, certificate and SCRAM user), :mod:`.process` (the
JVM: command line, storage formatting, starting, pids, signals), :mod:`.state` (what an
instance records on disk), :mod:`.probe` (metadata requests), :mod:`.broker` (up, down, kill,
status), :mod:`.temporary` (:func:`temporary_broker`), :mod:`.files` (atomic JSON, locks, log
tails), :mod:`.errors`.

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
    <data_root>/<name>/sasl_ssl/           the SASL_SSL listener's CA, keystore, SCRAM user

``data_root`` defaults to ``<home>/broker``; tests point it at a temporary directory and
keep sharing the jar cache.

The Kafka version has one source of truth: the ``kafka.version`` property in
``ops/kafka/pom.xml``.
"""

from hl7bus.connectors.paths import default_home
from hl7bus.ops.local_kafka.broker import BrokerStatus, down, kill, running_bootstrap, status, up
from hl7bus.ops.local_kafka.config import LocalKafkaConfig
from hl7bus.ops.local_kafka.errors import LocalKafkaError
from hl7bus.ops.local_kafka.jars import ensure_jars, kafka_version
from hl7bus.ops.local_kafka.sasl_ssl import SaslSslListener
from hl7bus.ops.local_kafka.state import BrokerInfo
from hl7bus.ops.local_kafka.temporary import temporary_broker

__all__ = [
    "BrokerInfo",
    "BrokerStatus",
    "LocalKafkaConfig",
    "LocalKafkaError",
    "SaslSslListener",
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
