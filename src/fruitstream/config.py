"""Settings from ``FRUITSTREAM_*`` environment variables and an optional ``.env`` file.

Defaults give the embedded set-up: a local folder, a SQLite database, no server at all.
Secrets are ``SecretStr``: they print as ``**********`` and never reach logs or errors.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Collection
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from pydantic import Field, PrivateAttr, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fruitstream.dataset import DATASET_DIR
from fruitstream.domain import ImageLimits
from fruitstream.errors import ConfigError

MASK = "**********"
SETTINGS_FILE_VARIABLE = "FRUITSTREAM_SETTINGS_FILE"


def part_config(prefix: str) -> SettingsConfigDict:
    """A settings part's configuration: its variables' prefix, the shared ``.env`` file."""
    return SettingsConfigDict(
        env_prefix=prefix, env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )


class FruitstreamSettings(BaseSettings):
    """What every settings class shares: ``FRUITSTREAM_*`` variables, a ``.env`` file (or
    ``FRUITSTREAM_SETTINGS_FILE``), secrets as ``SecretStr``. Each backend and entrypoint
    keeps its own subclass, with its own prefix, beside its code (``adapters/s3.py``:
    ``FRUITSTREAM_S3_*``); ``of(settings)`` reads it with whatever the core settings were
    given, so that one ``Settings(**values)`` configures every part."""

    model_config = part_config("FRUITSTREAM_")
    # Settings the Spark executors' settings file leaves out (names without the prefix).
    executor_skip: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def prefix(cls) -> str:
        """The part of the variables' names after ``FRUITSTREAM_``, lower case (``s3_``)."""
        return str(cls.model_config.get("env_prefix", "")).removeprefix("FRUITSTREAM_").lower()

    @classmethod
    def load(cls, **overrides: Any) -> Self:
        """Read settings; a bad value becomes a ``ConfigError`` naming the variable, not its
        value. ``FRUITSTREAM_SETTINGS_FILE`` names a dotenv file read instead of ``.env``
        (environment variables still win): how Spark executors get settings without a
        command line."""
        settings_file = os.environ.get(SETTINGS_FILE_VARIABLE)
        if settings_file:
            overrides.setdefault("_env_file", settings_file)
        try:
            return cls(**overrides)
        except ValidationError as exc:
            env = "FRUITSTREAM_" + cls.prefix().upper()
            problems = "; ".join(
                f"{env}{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
                for err in exc.errors()
            )
            raise ConfigError(f"invalid configuration: {problems}") from None

    @classmethod
    def of(cls, settings: Settings) -> Self:
        """This part's settings, from the environment and whatever ``settings`` was given
        under this part's names (``Settings(s3_bucket="b")`` is ``S3Settings(bucket="b")``)."""
        mine = cls.prefix()
        given = {
            k.removeprefix(mine): v
            for k, v in settings.given.items()
            if k.startswith(mine) and not k.startswith("_")
        }
        if "_env_file" in settings.given:
            given["_env_file"] = settings.given["_env_file"]
        return cls.load(**given)

    def masked(self) -> dict[str, Any]:
        """Every setting by its name after ``FRUITSTREAM_`` (lower case), secrets replaced
        by a mask (for ``fruitstream config`` and logs)."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = MASK
            elif isinstance(value, Path):
                value = str(value)
            out[self.prefix() + name] = value
        return out

    def dotenv_lines(self, skip: Collection[str] = ()) -> list[str]:
        """Every set value as a dotenv line (double-quoted, escaped), secrets in clear: for
        a file only its owner can read (the Spark executors'), less ``executor_skip`` and
        ``skip``."""
        lines = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None or name in skip or name in self.executor_skip:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            text = str(value).lower() if isinstance(value, bool) else str(value)
            escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
            lines.append(f'FRUITSTREAM_{(self.prefix() + name).upper()}="{escaped}"')
        return lines


class Settings(FruitstreamSettings):
    """The core: where data and the model are, image limits, which backends run (the
    selectors ``storage``, ``queue``, ``database_url``) and the worker's pace. Each backend
    and entrypoint reads its own part with ``XSettings.of(settings)``."""

    # Where the embedded set-up keeps its objects, database and queue.
    data_dir: Path = Path("data")
    # A model bundle folder; empty means the model shipped in the package.
    model_dir: Path | None = None
    # Which graph of the bundle runs: "auto" runs int8 only on a CPU with an int8 dot
    # product (VNNI, AMX, ARM dotprod) and when the bundle's int8 figures are close to its
    # fp32 ones, else fp32 (core.precision); "int8" or "fp32" runs that graph.
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

    # The servers' log lines (one per request, with its id): "text" or "json".
    log_format: Literal["text", "json"] = "text"

    # What these settings were given (every part's names: ``s3_bucket``, ``api_tokens``),
    # so that each part's ``of`` reads its own from the same call.
    _given: dict[str, Any] = PrivateAttr(default_factory=dict)

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self._given = dict(values)

    @property
    def given(self) -> dict[str, Any]:
        return self._given

    _paths = field_validator("model_dir", mode="before")(lambda value: empty_is_none(value))

    @property
    def limits(self) -> ImageLimits:
        return ImageLimits(max_bytes=self.max_image_bytes, max_pixels=self.max_image_pixels)

    @property
    def max_upload_mb(self) -> int:
        """The per-file limit in whole megabytes (Streamlit's ``server.maxUploadSize``)."""
        return max(1, math.ceil(self.max_image_bytes / (1024 * 1024)))

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{(self.data_dir / 'fruitstream.db').as_posix()}"

    def masked(self) -> dict[str, Any]:
        out = super().masked()
        out["database_url"] = (
            mask_url(self.sqlalchemy_url) if self.database_url is not None else self.sqlalchemy_url
        )
        return out

    def dotenv_lines(self, skip: Collection[str] = ()) -> list[str]:
        lines = super().dotenv_lines({*skip, "database_url"})
        escaped = self.sqlalchemy_url.replace("\\", "\\\\").replace('"', '\\"')
        return [*lines, f'FRUITSTREAM_DATABASE_URL="{escaped}"']


def empty_is_none(value: Any) -> Any:
    """For optional paths and the like: an empty variable means none."""
    return None if value == "" else value


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


def load_settings(**overrides: Any) -> Settings:
    """The core settings (``Settings.load``); a bad value is a ``ConfigError``."""
    return Settings.load(**overrides)


def items(value: str | SecretStr | None) -> list[str]:
    """The entries of a comma-separated setting, trimmed, empty ones left out."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return [item.strip() for item in (value or "").split(",") if item.strip()]
