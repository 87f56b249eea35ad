"""Kafka publisher (confluent-kafka): idempotent, ``acks=all``, topic created when absent."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fruitstream.config import Settings
from fruitstream.domain import ImageMessage
from fruitstream.errors import MissingDependencyError, QueueError
from fruitstream.ports import Health

log = logging.getLogger(__name__)
# librdkafka reports every retry (a broker restart, a coordinator still loading) as a warning;
# only its errors are worth a line.
_RDKAFKA_LOG = logging.getLogger("fruitstream.kafka.librdkafka")
_RDKAFKA_LOG.setLevel(logging.ERROR)


def client_config(settings: Settings) -> dict[str, Any]:
    """Connection settings shared by the producer and the admin client."""
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "security.protocol": settings.kafka_security_protocol,
        # librdkafka's own log lines go through logging (quiet by default), not stderr.
        "logger": _RDKAFKA_LOG,
    }
    if settings.kafka_sasl_mechanism:
        conf["sasl.mechanism"] = settings.kafka_sasl_mechanism
        conf["sasl.username"] = settings.kafka_sasl_username or ""
        if settings.kafka_sasl_password is not None:
            conf["sasl.password"] = settings.kafka_sasl_password.get_secret_value()
    if settings.kafka_ssl_cafile:
        conf["ssl.ca.location"] = str(settings.kafka_ssl_cafile)
    if settings.kafka_ssl_certfile:
        conf["ssl.certificate.location"] = str(settings.kafka_ssl_certfile)
    if settings.kafka_ssl_keyfile:
        conf["ssl.key.location"] = str(settings.kafka_ssl_keyfile)
    if settings.kafka_ssl_key_password is not None:
        conf["ssl.key.password"] = settings.kafka_ssl_key_password.get_secret_value()
    if settings.kafka_security_protocol.upper().endswith("SSL"):
        conf["ssl.endpoint.identification.algorithm"] = (
            "https" if settings.kafka_ssl_check_hostname else "none"
        )
    return conf


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
    def from_settings(cls, settings: Settings) -> KafkaPublisher:
        return cls(
            client_config(settings),
            settings.kafka_topic,
            settings.kafka_partitions,
            settings.kafka_replication_factor,
        )

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
