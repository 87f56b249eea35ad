"""In-memory adapters: the fakes for unit tests of logic (no durability, one process)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from fruitstream.domain import ImageMessage
from fruitstream.errors import NotFoundError
from fruitstream.ports import Delivery, Health


class MemoryObjectStore:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        self.objects[key] = data

    def get(self, key: str) -> bytes:
        try:
            return self.objects[key]
        except KeyError:
            raise NotFoundError(f"object {key} does not exist in the store") from None

    def health(self) -> Health:
        return Health("storage", True, f"memory, {len(self.objects)} objects")


class MemoryQueue:
    """Publisher and Consumer; ``fail_ids`` makes ``publish`` refuse chosen messages."""

    def __init__(self) -> None:
        self._items: list[tuple[int, bytes]] = []
        self._taken: dict[int, bytes] = {}
        self._attempts: dict[int, int] = {}
        self._reasons: dict[int, str] = {}
        self._seq = 0
        self._lock = threading.Lock()
        self.fail_ids: set[str] = set()

    def publish(self, messages: Sequence[ImageMessage]) -> dict[str, str]:
        failed = {
            m.image_id: "refused by the test queue" for m in messages if m.image_id in self.fail_ids
        }
        for m in messages:
            if m.image_id not in failed:
                self.publish_raw(m.to_json())
        return failed

    def publish_raw(self, payload: bytes) -> None:
        with self._lock:
            self._seq += 1
            self._items.append((self._seq, payload))

    def take(self, max_messages: int, timeout: float = 0.0) -> list[Delivery]:
        with self._lock:
            batch, self._items = self._items[:max_messages], self._items[max_messages:]
            self._taken.update(batch)
            for seq, _ in batch:
                self._attempts[seq] = self._attempts.get(seq, 0) + 1
            return [
                Delivery(payload, seq, self._attempts[seq], self._reasons.get(seq))
                for seq, payload in batch
            ]

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        with self._lock:
            for d in deliveries:
                self._taken.pop(d.handle, None)

    def extend(
        self, deliveries: Sequence[Delivery], seconds: float, reason: str | None = None
    ) -> None:
        """No leases here: a message handed back with a reason is queued again at once."""
        if reason is None:
            return
        with self._lock:
            for d in deliveries:
                payload = self._taken.pop(d.handle, None)
                if payload is not None:
                    self._reasons[d.handle] = reason
                    self._items.append((d.handle, payload))

    def depth(self) -> int:
        return len(self._items) + len(self._taken)

    def health(self) -> Health:
        return Health("queue", True, f"memory, {self.depth()} waiting", {"depth": self.depth()})
