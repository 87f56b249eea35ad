"""Object store on the local disk (``data/objects/<key>``), written atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from fruitstream.errors import NotFoundError, StorageError
from fruitstream.ports import Health


class LocalObjectStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise StorageError(f"object key {key!r} escapes the store")
        return path

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write then rename: a reader never sees half an image, a crash leaves no stub.
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except OSError as exc:
            raise StorageError(f"cannot store {key}: {exc.strerror or exc}") from exc

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise NotFoundError(f"object {key} does not exist in the store") from exc
        except OSError as exc:
            raise StorageError(f"cannot read {key}: {exc.strerror or exc}") from exc

    def health(self) -> Health:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            ok = os.access(self.root, os.W_OK)
        except OSError as exc:
            return Health("storage", False, f"{self.root}: {exc.strerror or exc}")
        return Health("storage", ok, f"local folder {self.root}" + ("" if ok else " (read-only)"))
