"""The one exception hierarchy of fruitstream; third-party errors are translated into it.

    FruitstreamError                 base of everything raised on purpose
    ├── ConfigError                  a setting is missing or invalid
    ├── MissingDependencyError       an optional extra is not installed (says which)
    ├── ModelError                   the model bundle cannot be loaded or run
    ├── ImageError                   one image cannot be classified (bad bytes, too big, ...)
    │   ├── ImageTooLargeError       over the byte limit (empty counts as not an image)
    │   │   └── TooManyPixelsError   over the pixel limit (a decompression bomb, a huge scan)
    │   └── UnsupportedImageError    not an image at all
    │       ├── CorruptImageError    an image format, but truncated or damaged
    │       └── UnsupportedFormatError  an image in a format fruitstream does not read
    ├── BackendError                 a storage, queue or results backend failed
    │   ├── StorageError
    │   ├── QueueError
    │   └── ResultStoreError
    ├── NotFoundError                a session, image or object does not exist
    ├── CursorError                  a page cursor that names no row of the listing
    ├── ConflictError                the same request is already being carried out
    ├── IdempotencyMismatchError     an idempotency key used again with another request
    ├── CallbackError                a callback URL this server may not call
    ├── LabelError                   a label that cannot name a fruit (empty, absurd)
    └── MessageError                 a queue message breaks the contract (docs/ARCHITECTURE.md)

Adapters catch boto, psycopg, SQLAlchemy and Kafka exceptions at their boundary and
raise one of these ``from`` the original, with a message that never carries a secret.
"""

from __future__ import annotations


class FruitstreamError(Exception):
    """Base class for every error fruitstream raises on purpose."""


class ConfigError(FruitstreamError):
    """A setting is missing or invalid."""


class MissingDependencyError(FruitstreamError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"{package} is not installed; install it with: pip install 'fruitstream[{extra}]'"
        )
        self.package = package
        self.extra = extra


class ModelError(FruitstreamError):
    """The model bundle cannot be loaded or run."""


class ImageError(FruitstreamError):
    """One image cannot be classified."""


class ImageTooLargeError(ImageError):
    """The image is over the configured byte or pixel limit."""


class TooManyPixelsError(ImageTooLargeError):
    """An image whose decoded size is over the pixel limit."""


class UnsupportedImageError(ImageError):
    """The bytes are not a readable image."""


class BackendError(FruitstreamError):
    """A backend (object store, queue, results database) failed."""


class StorageError(BackendError):
    """The object store failed."""


class QueueError(BackendError):
    """The message queue failed."""


class ResultStoreError(BackendError):
    """The results database failed."""


class NotFoundError(FruitstreamError):
    """A session, image or object does not exist."""


class MessageError(FruitstreamError):
    """A queue message does not follow the contract (bad JSON, missing field, wrong schema)."""


class CorruptImageError(UnsupportedImageError):
    """An image format that is truncated or damaged."""


class UnsupportedFormatError(UnsupportedImageError):
    """An image in a format fruitstream does not read."""


class CursorError(FruitstreamError):
    """A page cursor that names no row of the listing it pages."""


class ConflictError(FruitstreamError):
    """The same request (its idempotency key) is already being carried out."""


class IdempotencyMismatchError(FruitstreamError):
    """An idempotency key sent again with another request (other files, name or callback)."""


class CallbackError(FruitstreamError):
    """A callback URL this server may not call (callbacks off, not http(s), host not allowed)."""


class LabelError(FruitstreamError):
    """A label that cannot name a fruit: empty, too long, or made of odd characters."""
