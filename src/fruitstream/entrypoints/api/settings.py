"""The HTTP API's own settings (``FRUITSTREAM_API_*``): tokens, limits, CORS, rate limits."""

from __future__ import annotations

from pydantic import Field, SecretStr

from fruitstream.config import FruitstreamSettings, items, part_config


class ApiSettings(FruitstreamSettings):
    """Read once per app (``ApiSettings.of(service.settings)``)."""

    model_config = part_config("FRUITSTREAM_API_")

    # Bearer tokens, comma-separated (secret). None configured: the server binds to
    # 127.0.0.1 only.
    tokens: SecretStr | None = None
    # Tokens that see every batch (each token of ``tokens`` sees only those it submitted).
    admin_tokens: SecretStr | None = None
    max_batch_files: int = Field(default=1000, gt=0)
    # The most a batch request may send in all, whatever its files: refused at Content-Length,
    # or as soon as a chunked body passes it.
    max_request_bytes: int = Field(default=1024 * 1024 * 1024, gt=0)
    # On the embedded queue, the API process classifies the batches it takes (as the app does).
    worker: bool = True
    # Browser origins allowed to call the API (CORS), comma-separated; empty: none (default).
    cors_origins: str = ""
    # Requests per second each token (or, without tokens, each client address) may make on
    # average, with bursts of ``rate_burst``; past it, 429 with Retry-After. 0: no limit.
    rate_limit: float = Field(default=0.0, ge=0)
    rate_burst: int = Field(default=20, gt=0)

    @property
    def cors_origin_list(self) -> list[str]:
        return items(self.cors_origins)

    @property
    def admin_token_list(self) -> list[str]:
        return items(self.admin_tokens)

    @property
    def token_list(self) -> list[str]:
        return items(self.tokens)
