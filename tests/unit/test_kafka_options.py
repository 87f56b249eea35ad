"""The Kafka connection settings, translated once by the Kafka adapter for both clients
(librdkafka for the publisher, the Java client for Spark's source), and the Spark job's
reading of its query's progress."""

from __future__ import annotations

from pathlib import Path

import pytest

from fruitstream.adapters.kafka import KafkaSettings, client_config
from fruitstream.config import Settings
from fruitstream.entrypoints.spark_job import kafka_options, progress_info
from fruitstream.errors import ConfigError


def _secure(tmp_path: Path) -> Settings:
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text(f"-----BEGIN {name}-----\n")
    return Settings(
        queue="kafka",
        kafka_bootstrap_servers="broker:9093",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="fruit",
        kafka_sasl_password='p"ss',
        kafka_ssl_cafile=tmp_path / "ca.pem",
        kafka_ssl_certfile=tmp_path / "cert.pem",
        kafka_ssl_keyfile=tmp_path / "key.pem",
        kafka_ssl_check_hostname=False,
        spark_min_partitions=6,
    )


def test_both_clients_get_the_same_connection(tmp_path: Path) -> None:
    settings = _secure(tmp_path)
    rd = client_config(KafkaSettings.of(settings))
    java = kafka_options(settings)
    assert rd["bootstrap.servers"] == java["kafka.bootstrap.servers"] == "broker:9093"
    assert rd["security.protocol"] == java["kafka.security.protocol"] == "SASL_SSL"
    assert rd["sasl.mechanism"] == java["kafka.sasl.mechanism"] == "SCRAM-SHA-512"
    assert rd["sasl.password"] == 'p"ss'
    assert java["kafka.sasl.jaas.config"] == (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="fruit" password="p\\"ss";'
    )
    assert rd["ssl.ca.location"] == java["kafka.ssl.truststore.location"]
    assert java["kafka.ssl.keystore.key"] == "-----BEGIN key.pem-----\n"
    assert rd["ssl.endpoint.identification.algorithm"] == "none"
    assert java["kafka.ssl.endpoint.identification.algorithm"] == ""
    assert java["subscribe"] == "fruit-images" and java["minPartitions"] == "6"


def test_the_spark_job_refuses_a_queue_that_is_not_kafka() -> None:
    with pytest.raises(ConfigError, match="FRUITSTREAM_QUEUE=kafka"):
        kafka_options(Settings(queue="local"))


def test_progress_info_reads_rates_and_lag_from_spark_progress() -> None:
    progress = {
        "batchId": 7,
        "inputRowsPerSecond": 12.345,
        "processedRowsPerSecond": "9.5",
        "numInputRows": 40,
        "timestamp": "2026-11-29T08:00:00.000Z",
        "sources": [{"metrics": {"maxOffsetsBehindLatest": "12"}}, {"metrics": None}],
    }
    info = progress_info(progress)
    assert info == {
        "batch_id": 7,
        "input_rate": 12.35,
        "processed_rate": 9.5,
        "rows_in_last_batch": 40,
        "last_batch_at": "2026-11-29T08:00:00.000Z",
        "lag": 12,
    }
    assert progress_info(None) == {} and "lag" not in progress_info({"sources": None})
