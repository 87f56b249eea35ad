"""The records and contracts at the bottom of everything (docs/ARCHITECTURE.md): prediction,
message, result row and its status, session, image limits. No numpy, Pillow or backend here."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from fruitstream.errors import ImageTooLargeError, LabelError, MessageError, UnsupportedImageError

MESSAGE_SCHEMA = 1


@dataclass(frozen=True)
class ImageLimits:
    """What an accepted image may weigh: bytes on the wire and decoded pixels."""

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000


def check_size(size: int, limits: ImageLimits) -> None:
    """Refuse a file by its size alone, before it is read or decoded: empty, or too large."""
    if not size:
        raise UnsupportedImageError("empty file (0 bytes)")
    if size > limits.max_bytes:
        raise ImageTooLargeError(
            f"file is {size:,} bytes, over the limit of {limits.max_bytes:,} bytes"
        )


class Status(StrEnum):
    """A result row's status: classified, or not (with the reason in ``error``)."""

    OK = "ok"
    ERROR = "error"


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class TopK:
    label: str
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "confidence": self.confidence}


@dataclass(frozen=True)
class Prediction:
    """What the model says about one photo.

    ``label`` is always one of the known fruits (the closest guess); ``known`` is False when
    the photo is judged not to be one of them.
    """

    label: str
    confidence: float
    known: bool
    top_k: tuple[TopK, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "confidence": self.confidence,
            "known": self.known,
            "top_k": [t.to_dict() for t in self.top_k],
        }


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


def safe_filename(name: str, limit: int = 100) -> str:
    """A file name that is safe in an object key and a path: no folders, no odd characters."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _UNSAFE.sub("_", base).strip("._") or "image"
    return cleaned[-limit:]


def object_key(session_id: str, image_id: str, filename: str, when: datetime) -> str:
    return f"uploads/{when:%Y%m%d}/{session_id}/{image_id}-{safe_filename(filename)}"


@dataclass(frozen=True)
class ImageMessage:
    """One photo announced on the queue (JSON, UTF-8, keyed by ``image_id``)."""

    image_id: str
    session_id: str
    object_key: str
    filename: str
    content_sha256: str
    submitted_at: datetime
    schema: int = MESSAGE_SCHEMA

    def to_json(self) -> bytes:
        data = asdict(self)
        data["submitted_at"] = self.submitted_at.isoformat()
        return json.dumps(data, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes | str) -> ImageMessage:
        """Parse and validate; a message that breaks the contract raises ``MessageError``."""
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MessageError(f"message is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise MessageError("message is not a JSON object")
        schema = data.get("schema")
        if schema != MESSAGE_SCHEMA:
            raise MessageError(f"unsupported message schema {schema!r} (expected {MESSAGE_SCHEMA})")
        try:
            image_id = str(uuid.UUID(str(data["image_id"])))
            submitted = datetime.fromisoformat(str(data["submitted_at"]))
            return cls(
                image_id=image_id,
                session_id=str(data["session_id"]),
                object_key=str(data["object_key"]),
                filename=str(data["filename"]),
                content_sha256=str(data["content_sha256"]),
                submitted_at=submitted if submitted.tzinfo else submitted.replace(tzinfo=UTC),
            )
        except KeyError as exc:
            raise MessageError(f"message has no field {exc.args[0]!r}") from None
        except ValueError as exc:
            raise MessageError(f"message has a bad field: {exc}") from None


def image_id_of(raw: bytes | str) -> str | None:
    """Best-effort image id of a message that failed validation (to record its error row)."""
    try:
        data = json.loads(raw)
        return str(uuid.UUID(str(data["image_id"])))
    except Exception:
        return None


@dataclass(frozen=True, kw_only=True)
class ResultRow:
    """One classified (or failed) photo; ``image_id`` is the primary key."""

    # The field order is the contract's column order (docs/ARCHITECTURE.md): the SQL table,
    # the Spark schema and the CSV header are all derived from it (``result_columns``).
    image_id: str
    session_id: str
    filename: str
    object_key: str
    label: str | None = None
    confidence: float | None = None
    known: bool | None = None
    top_k: list[dict[str, Any]] = field(default_factory=list)
    status: Status
    error: str | None = None
    model_version: str
    submitted_at: datetime
    processed_at: datetime
    latency_ms: float | None = None

    def __post_init__(self) -> None:
        # Rows read back from SQL, Spark or JSON carry the status as text.
        object.__setattr__(self, "status", Status(self.status))

    @classmethod
    def from_outcome(
        cls,
        msg: ImageMessage,
        outcome: Prediction | Exception,
        model_version: str,
        processed_at: datetime | None = None,
    ) -> ResultRow:
        done = processed_at or utcnow()
        row = cls(
            image_id=msg.image_id,
            session_id=msg.session_id,
            filename=msg.filename,
            object_key=msg.object_key,
            status=Status.OK,
            model_version=model_version,
            submitted_at=msg.submitted_at,
            processed_at=done,
            latency_ms=(done - msg.submitted_at).total_seconds() * 1000,
        )
        if isinstance(outcome, Prediction):
            d = outcome.to_dict()
            return replace(
                row,
                label=d["label"],
                confidence=d["confidence"],
                known=d["known"],
                top_k=d["top_k"],
            )
        return replace(row, status=Status.ERROR, error=str(outcome) or type(outcome).__name__)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["submitted_at"] = self.submitted_at.isoformat()
        data["processed_at"] = self.processed_at.isoformat()
        return data


# Kinds of the contract's columns, by ``ResultRow`` annotation: what each storage calls them.
_KINDS = {
    "str": "text",
    "str | None": "text",
    "float | None": "float",
    "bool | None": "bool",
    "datetime": "timestamp",
    "Status": "text",
    "list[dict[str, Any]]": "json",
}


def result_columns() -> list[tuple[str, str]]:
    """``(name, kind)`` of every result column in contract order; kinds: text, float, bool,
    timestamp, json."""
    return [(f.name, _KINDS[str(f.type)]) for f in fields(ResultRow)]


def optional_columns() -> set[str]:
    """The result columns that may be empty (null)."""
    return {f.name for f in fields(ResultRow) if str(f.type).endswith("| None")}


def error_row(msg: ImageMessage, reason: str, model_version: str) -> ResultRow:
    """The result row of a photo that could not be classified, saying why."""
    return ResultRow.from_outcome(msg, RuntimeError(reason), model_version)


@dataclass(frozen=True)
class SessionRecord:
    """A batch: how many photos were submitted, so progress is results / submitted."""

    session_id: str
    created_at: datetime
    submitted: int
    name: str = ""
    # Who submitted it, as an opaque id (the HTTP API's token, hashed); "" for everyone.
    owner: str = ""


@dataclass(frozen=True)
class Caller:
    """Who asks: the owner whose data a call concerns (an opaque id: a token's hash, a
    browser's id, "" for the machine's operator), and whether it sees every owner's data.

    Every use case that reads, changes or deletes someone's data takes one, so that scoping
    is decided in one place (``sees``) and no call can leave it out by accident.
    """

    owner: str = ""
    admin: bool = False

    def sees(self, owner: str) -> bool:
        """Whether data of ``owner`` exists for this caller."""
        return self.admin or owner == self.owner

    @property
    def scope(self) -> str | None:
        """The owner a listing is narrowed to; None: every owner's (an admin)."""
        return None if self.admin else self.owner


# The command line and the tools: the machine's operator, who sees everything and whose
# batches are recorded under "".
OPERATOR = Caller(owner="", admin=True)


@dataclass(frozen=True)
class Progress:
    session_id: str
    submitted: int
    done: int
    errors: int

    @property
    def complete(self) -> bool:
        return self.done >= self.submitted

    @property
    def fraction(self) -> float:
        return 1.0 if self.submitted == 0 else min(1.0, self.done / self.submitted)


# The label of a photo that shows none of the fruits.
NOT_FRUIT = "not-fruit"
_LABEL = re.compile(r"^[a-z](?:[a-z0-9 -]{0,38}[a-z0-9])?$")
# Where the object store keeps a labelled photo that came without a batch: by its content.
LABEL_PREFIX = "labels/"


def normalize_label(text: str) -> str:
    """A person's label as stored: lower case, single spaces; a known fruit, ``not-fruit``, or
    a new fruit's name (2-40 letters, digits, spaces, hyphens). ``LabelError`` otherwise."""
    cleaned = " ".join(text.strip().lower().replace("_", " ").split())
    if cleaned in {"not fruit", "none", "not a fruit"}:
        cleaned = NOT_FRUIT
    if not _LABEL.match(cleaned) or len(cleaned) < 2:
        raise LabelError(
            f"a label is a fruit's name (2-40 letters, digits, spaces or hyphens) or"
            f" {NOT_FRUIT!r}, not {text[:60]!r}"
        )
    return cleaned


@dataclass(frozen=True)
class Label:
    """What a person said a photo shows, next to what the model said. A photo is its content
    (``content_sha256``): the latest label of the same bytes wins, and the earlier ones are
    kept as its history."""

    label_id: str
    content_sha256: str
    object_key: str
    label: str
    model_label: str | None
    model_known: bool | None
    model_version: str
    source: str  # app, api, cli, teach
    created_at: datetime
    image_id: str | None = None  # the result row it corrects, when it came from a batch

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        return data


# Where the object store keeps an adapted version's head: ``models/<version>/head.npz``.
MODEL_PREFIX = "models/"
# The shipped model, as ``fruitstream models`` names it.
BASE_VERSION = "base"
# How ``fruitstream adapt`` may fit a new last layer (``core.adaptation``).
ADAPT_METHODS = ("prior", "prototypes", "mix")
# A label not among the model's fruits becomes a fruit of its own from this many photos on.
MIN_NEW_CLASS_PHOTOS = 5


@dataclass(frozen=True)
class ModelVersion:
    """One version made by ``fruitstream adapt``: the shipped graphs with a new last layer.

    ``figures`` holds, per held-out set, the base's and this version's top-1 (or share
    rejected); ``refused`` says why the guard kept it from going live (empty: it passed).
    """

    version: str
    parent: str  # the version it was adapted from (``base``: the shipped model)
    base_model: str  # the shipped bundle's ``name:version``
    labels_used: int
    classes: tuple[str, ...]
    method: str
    figures: dict[str, Any]
    refused: tuple[str, ...]
    seconds: float
    created_at: datetime

    @property
    def head_key(self) -> str:
        return f"{MODEL_PREFIX}{self.version}/head.npz"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        data["classes"] = list(self.classes)
        data["refused"] = list(self.refused)
        return data
