"""Settings from ``FRUITSTREAM_*`` environment variables and an optional ``.env`` file.

Defaults give the embedded set-up: a local folder, a SQLite database, no server at all.
Secrets are ``SecretStr``: they print as ``**********`` and never reach logs or errors.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fruitstream.dataset import DATASET_DIR
from fruitstream.domain import ImageLimits
from fruitstream.errors import ConfigError

MASK = "**********"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FRUITSTREAM_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # Where the embedded set-up keeps its objects, database and queue.
    data_dir: Path = Path("data")
    # A model bundle folder; empty means the model shipped in the package.
    model_dir: Path | None = None
    # Which graph of the bundle runs: "auto" is the bundle's default (int8 when it ships one);
    # "fp32" runs the unquantized graph, for comparison.
    model_precision: Literal["auto", "int8", "fp32"] = "auto"
    max_image_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    max_image_pixels: int = Field(default=50_000_000, gt=0)
    threads: int = Field(default=0, ge=0)
    batch_size: int = Field(default=32, gt=0)
    top_k: int = Field(default=3, gt=0)
    # Adapting the model to people's labels (``fruitstream adapt``): the fruits15 folder whose
    # held-out sets the guard measures, and, when above 0, adapt on its own after every N
    # new labels (a version that the guard refuses is kept, not activated).
    dataset_dir: Path = DATASET_DIR
    adapt_every: int = Field(default=0, ge=0)

    # Backends: embedded by default, distributed when configured.
    storage: Literal["local", "s3"] = "local"
    queue: Literal["local", "kafka"] = "local"
    # SQLAlchemy URL; it may hold a password, so it is a secret. Empty: SQLite in data_dir.
    database_url: SecretStr | None = None

    # Worker
    worker_batch_size: int = Field(default=32, gt=0)
    worker_poll_seconds: float = Field(default=0.2, gt=0)
    # A taken message not acknowledged within this time goes back to the queue. The worker
    # renews the leases of the batch in hand every third of it, so it bounds how long the
    # photos of a killed worker wait, not how long a batch may take.
    lease_seconds: float = Field(default=10.0, gt=0)
    # A submit that has not moved for this long is taken for dead: workers and the Spark job
    # finish it (queue what it stored, an error row for the rest).
    stalled_submit_seconds: float = Field(default=60.0, gt=0)

    # S3-compatible object storage
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_bucket: str = "fruitstream"
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None

    # Kafka
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_topic: str = "fruit-images"
    kafka_partitions: int = Field(default=3, gt=0)
    kafka_replication_factor: int = Field(default=1, gt=0)
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    # TLS (security protocol SSL or SASL_SSL): PEM files. The CA verifies the brokers; the
    # certificate and key, when given, authenticate this client to them (mutual TLS).
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    kafka_ssl_key_password: SecretStr | None = None
    # Check that the broker's certificate names the host connected to (https-style).
    kafka_ssl_check_hostname: bool = True

    # HTTP API (fruitstream serve): bearer tokens, comma-separated (secret). None configured:
    # the server binds to 127.0.0.1 only.
    api_tokens: SecretStr | None = None
    # Tokens that see every batch (each token of api_tokens sees only those it submitted).
    api_admin_tokens: SecretStr | None = None
    api_max_batch_files: int = Field(default=1000, gt=0)
    # The most a batch request may send in all, whatever its files: refused at Content-Length,
    # or as soon as a chunked body passes it.
    api_max_request_bytes: int = Field(default=1024 * 1024 * 1024, gt=0)
    # On the embedded queue, the API process classifies the batches it takes (as the app does).
    api_worker: bool = True
    # Hosts a batch's completion callback may be sent to (POST /v1/batches?callback=URL),
    # comma-separated; empty: callbacks are refused. Each is signed with the secret below.
    api_callback_hosts: str = ""
    api_callback_secret: SecretStr | None = None
    # Browser origins allowed to call the API (CORS), comma-separated; empty: none (default).
    api_cors_origins: str = ""
    # Requests per second each token (or, without tokens, each client address) may make on
    # average, with bursts of api_rate_burst; past it, 429 with Retry-After. 0: no limit.
    api_rate_limit: float = Field(default=0.0, ge=0)
    api_rate_burst: int = Field(default=20, gt=0)
    # The server's log lines (one per request, with its id): "text" or "json".
    log_format: Literal["text", "json"] = "text"

    # Spark
    spark_master: str = "local[2]"
    spark_checkpoint: str = "data/spark-checkpoint"
    spark_max_offsets_per_trigger: int = Field(default=256, gt=0)
    spark_trigger_seconds: float = Field(default=0.5, ge=0)
    # Tasks per micro-batch: a multiple of the executor cores (Kafka offsets are split).
    spark_min_partitions: int | None = Field(default=None, gt=0)
    spark_jars: str | None = None
    # Messages deleted from Kafka (retention) before the job read them: fail the query loudly
    # (true), or skip them with a warning in the driver's log (false).
    spark_fail_on_data_loss: bool = True
    # A settings file that every Spark executor can read (mode 0600, deployed with the
    # cluster): how executors get their credentials without a command line. Empty: the
    # driver writes one to a private temporary folder, which works where executors share its
    # file system (local mode, a one-machine standalone cluster).
    spark_executor_settings_file: Path | None = None

    @field_validator(
        "model_dir",
        "kafka_ssl_cafile",
        "kafka_ssl_certfile",
        "kafka_ssl_keyfile",
        "spark_executor_settings_file",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @property
    def limits(self) -> ImageLimits:
        return ImageLimits(max_bytes=self.max_image_bytes, max_pixels=self.max_image_pixels)

    @property
    def max_upload_mb(self) -> int:
        """The per-file limit in whole megabytes (Streamlit's ``server.maxUploadSize``)."""
        return max(1, math.ceil(self.max_image_bytes / (1024 * 1024)))

    @property
    def api_callback_host_list(self) -> list[str]:
        return [h.lower() for h in _items(self.api_callback_hosts)]

    @property
    def api_cors_origin_list(self) -> list[str]:
        return _items(self.api_cors_origins)

    @property
    def api_admin_token_list(self) -> list[str]:
        return _items(self.api_admin_tokens)

    @property
    def api_token_list(self) -> list[str]:
        return _items(self.api_tokens)

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{(self.data_dir / 'fruitstream.db').as_posix()}"

    def masked(self) -> dict[str, Any]:
        """Every setting, secrets replaced by a mask (for ``fruitstream config`` and logs)."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = MASK
            elif isinstance(value, Path):
                value = str(value)
            out[name] = value
        out["database_url"] = (
            mask_url(self.sqlalchemy_url) if self.database_url is not None else self.sqlalchemy_url
        )
        return out


_SECRET_PARAM = re.compile(r"(?i)(^|[?&;])([^=&;]*(?:password|secret|token|key)[^=&;]*)=[^&;]*")


def mask_url(url: str) -> str:
    """The URL with its password masked, in the user part or in a query parameter:
    ``postgresql://user:pw@host/db?sslpassword=x`` -> ``postgresql://user:***@host/db?sslpassword=***``.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    path, qmark, query = rest.partition("?")
    if "@" in path:
        creds, _, host = path.rpartition("@")
        user = creds.split(":", 1)[0]
        path = f"{user}:{MASK}@{host}"
    if qmark:
        query = _SECRET_PARAM.sub(lambda m: f"{m.group(1)}{m.group(2)}={MASK}", query)
    return f"{scheme}://{path}{qmark}{query}"


SETTINGS_FILE_VARIABLE = "FRUITSTREAM_SETTINGS_FILE"


def load_settings(**overrides: Any) -> Settings:
    """Read settings; a bad value becomes a ``ConfigError`` naming the variable, not its value.

    ``FRUITSTREAM_SETTINGS_FILE`` names a dotenv file read instead of ``.env`` (environment
    variables still win): how Spark executors get settings without a command line.
    """
    settings_file = os.environ.get(SETTINGS_FILE_VARIABLE)
    if settings_file:
        overrides.setdefault("_env_file", settings_file)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"FRUITSTREAM_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from None


def _items(value: str | SecretStr | None) -> list[str]:
    """The entries of a comma-separated setting, trimmed, empty ones left out."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return [item.strip() for item in (value or "").split(",") if item.strip()]
