"""Kafka: the publisher (confluent-kafka: idempotent, ``acks=all``, topic created when absent)
and the one translation of the connection settings, for librdkafka and for the Java client
that Spark's Kafka source runs."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, SecretStr, field_validator

from fruitstream.config import FruitstreamSettings, empty_is_none, part_config
from fruitstream.domain import ImageMessage
from fruitstream.errors import MissingDependencyError, QueueError
from fruitstream.ports import Health

log = logging.getLogger(__name__)
# librdkafka reports every retry (a broker restart, a coordinator still loading) as a warning;
# only its errors are worth a line.
_RDKAFKA_LOG = logging.getLogger("fruitstream.kafka.librdkafka")
_RDKAFKA_LOG.setLevel(logging.ERROR)


class KafkaSettings(FruitstreamSettings):
    """Where the brokers are, how to reach them, and the topic (``FRUITSTREAM_KAFKA_*``)."""

    model_config = part_config("FRUITSTREAM_KAFKA_")

    bootstrap_servers: str = "127.0.0.1:9092"
    topic: str = "fruit-images"
    partitions: int = Field(default=3, gt=0)
    replication_factor: int = Field(default=1, gt=0)
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    # TLS (security protocol SSL or SASL_SSL): PEM files. The CA verifies the brokers; the
    # certificate and key, when given, authenticate this client to them (mutual TLS).
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_key_password: SecretStr | None = None
    # Check that the broker's certificate names the host connected to (https-style).
    ssl_check_hostname: bool = True

    # Kafka is read by Spark's own JVM source: executors' Python never needs its secrets.
    executor_skip: ClassVar[tuple[str, ...]] = ("sasl_password", "ssl_key_password")

    _paths = field_validator("ssl_cafile", "ssl_certfile", "ssl_keyfile", mode="before")(
        empty_is_none
    )


def client_config(conn: KafkaSettings) -> dict[str, Any]:
    """Connection settings shared by the producer and the admin client."""
    conf: dict[str, Any] = {
        "bootstrap.servers": conn.bootstrap_servers,
        "security.protocol": conn.security_protocol,
        # librdkafka's own log lines go through logging (quiet by default), not stderr.
        "logger": _RDKAFKA_LOG,
    }
    if conn.sasl_mechanism:
        conf["sasl.mechanism"] = conn.sasl_mechanism
        conf["sasl.username"] = conn.sasl_username or ""
        if conn.sasl_password is not None:
            conf["sasl.password"] = conn.sasl_password.get_secret_value()
    if conn.ssl_cafile:
        conf["ssl.ca.location"] = str(conn.ssl_cafile)
    if conn.ssl_certfile:
        conf["ssl.certificate.location"] = str(conn.ssl_certfile)
    if conn.ssl_keyfile:
        conf["ssl.key.location"] = str(conn.ssl_keyfile)
    if conn.ssl_key_password is not None:
        conf["ssl.key.password"] = conn.ssl_key_password.get_secret_value()
    if conn.security_protocol.upper().endswith("SSL"):
        conf["ssl.endpoint.identification.algorithm"] = (
            "https" if conn.ssl_check_hostname else "none"
        )
    return conf


def java_client_options(conn: KafkaSettings) -> dict[str, str]:
    """The same connection for Kafka's Java client, as Spark's Kafka source takes it (every
    key prefixed ``kafka.``). Certificates are read here: the Java client takes PEM text."""
    options = {
        "kafka.bootstrap.servers": conn.bootstrap_servers,
        "kafka.security.protocol": conn.security_protocol,
    }
    if conn.sasl_mechanism and conn.sasl_password is not None:
        options["kafka.sasl.mechanism"] = conn.sasl_mechanism
        module = (
            "org.apache.kafka.common.security.scram.ScramLoginModule"
            if conn.sasl_mechanism.startswith("SCRAM")
            else "org.apache.kafka.common.security.plain.PlainLoginModule"
        )
        user = jaas_quote(conn.sasl_username or "")
        password = jaas_quote(conn.sasl_password.get_secret_value())
        options["kafka.sasl.jaas.config"] = (
            f"{module} required username={user} password={password};"
        )
    if conn.ssl_cafile:
        # Kafka's Java client reads PEM directly (KIP-651): no JKS keystore to build.
        options["kafka.ssl.truststore.type"] = "PEM"
        options["kafka.ssl.truststore.location"] = str(conn.ssl_cafile)
    if conn.ssl_certfile and conn.ssl_keyfile:
        options["kafka.ssl.keystore.type"] = "PEM"
        options["kafka.ssl.keystore.certificate.chain"] = conn.ssl_certfile.read_text()
        options["kafka.ssl.keystore.key"] = conn.ssl_keyfile.read_text()
        if conn.ssl_key_password is not None:
            options["kafka.ssl.key.password"] = conn.ssl_key_password.get_secret_value()
    if conn.security_protocol.upper().endswith("SSL"):
        options["kafka.ssl.endpoint.identification.algorithm"] = (
            "https" if conn.ssl_check_hostname else ""
        )
    return options


def jaas_quote(value: str) -> str:
    """A JAAS option value: double-quoted, with ``\\`` and ``"`` escaped (a password may hold
    either, and would otherwise end the string or break the parse)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _kafka() -> Any:
    try:
        import confluent_kafka
        import confluent_kafka.admin
    except ImportError as exc:
        raise MissingDependencyError("confluent-kafka", "distributed") from exc
    return confluent_kafka


class KafkaPublisher:
    def __init__(
        self,
        conf: dict[str, Any],
        topic: str,
        partitions: int = 3,
        replication: int = 1,
        send_timeout: float = 30.0,
    ) -> None:
        self.conf = conf
        self.topic = topic
        self.partitions = partitions
        self.replication = replication
        self.send_timeout = send_timeout
        self._producer: Any = None
        self._topic_ready = False

    @classmethod
    def connect(cls, conn: KafkaSettings) -> KafkaPublisher:
        return cls(client_config(conn), conn.topic, conn.partitions, conn.replication_factor)

    def _admin(self) -> Any:
        return _kafka().admin.AdminClient({**self.conf, "socket.timeout.ms": 10000})

    def ensure_topic(self) -> None:
        """Create the topic with its partitions when it does not exist yet."""
        if self._topic_ready:
            return
        kafka = _kafka()
        admin = self._admin()
        try:
            meta = admin.list_topics(timeout=10)
        except kafka.KafkaException as exc:
            raise QueueError(
                f"Kafka unreachable at {self.conf['bootstrap.servers']}: {exc}"
            ) from exc
        if self.topic not in meta.topics:
            new = kafka.admin.NewTopic(self.topic, self.partitions, self.replication)
            future = admin.create_topics([new])[self.topic]
            try:
                future.result(timeout=30)
            except kafka.KafkaException as exc:
                if exc.args[0].code() != kafka.KafkaError.TOPIC_ALREADY_EXISTS:
                    raise QueueError(f"cannot create topic {self.topic}: {exc}") from exc
        self._topic_ready = True

    def _get_producer(self) -> Any:
        if self._producer is None:
            self._producer = _kafka().Producer(
                {
                    **self.conf,
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 5,
                    # A broker restart is survived by retrying within this time.
                    "delivery.timeout.ms": int(self.send_timeout * 1000),
                    "compression.type": "lz4",
                }
            )
        return self._producer

    def publish(self, messages: Sequence[ImageMessage]) -> dict[str, str]:
        """Send all; wait for every acknowledgement; return ``image_id -> reason`` failures."""
        if not messages:
            return {}
        try:
            self.ensure_topic()
        except QueueError as exc:
            return {m.image_id: str(exc) for m in messages}
        kafka = _kafka()
        producer = self._get_producer()
        failed: dict[str, str] = {}
        pending: set[str] = set()

        def on_delivery(err: Any, msg: Any) -> None:
            image_id = msg.key().decode()
            pending.discard(image_id)
            if err is not None:
                failed[image_id] = f"Kafka did not accept it: {err.str()}"

        for m in messages:
            while True:
                try:
                    producer.produce(
                        self.topic,
                        key=m.image_id.encode(),
                        value=m.to_json(),
                        on_delivery=on_delivery,
                    )
                    pending.add(m.image_id)
                    break
                except BufferError:
                    producer.poll(0.5)  # local queue full: let deliveries drain
                except kafka.KafkaException as exc:
                    failed[m.image_id] = f"Kafka refused it: {exc}"
                    break
        remaining = producer.flush(self.send_timeout + 5)
        if remaining:
            for image_id in pending:
                failed.setdefault(image_id, "no acknowledgement from Kafka in time")
        if failed:
            log.warning("%d of %d messages not acknowledged by Kafka", len(failed), len(messages))
        return failed

    def health(self) -> Health:
        kafka = _kafka()
        try:
            meta = self._admin().list_topics(timeout=5)
        except kafka.KafkaException as exc:
            return Health("queue", False, f"Kafka {self.conf['bootstrap.servers']}: {exc}")
        topic = meta.topics.get(self.topic)
        parts = len(topic.partitions) if topic is not None else 0
        detail = f"Kafka {self.conf['bootstrap.servers']}, topic {self.topic}"
        detail += f" ({parts} partitions)" if topic is not None else " (not created yet)"
        return Health("queue", True, detail, {"partitions": parts})
