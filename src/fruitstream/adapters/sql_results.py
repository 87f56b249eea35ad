"""Result rows, sessions and the submit log in SQL (ResultStore, SessionStore, SubmitLog)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from fruitstream.adapters.sql_engine import SqlEngine, aware, keyset_page
from fruitstream.adapters.sql_schema import photos_table, results_table, sessions_table
from fruitstream.domain import ImageMessage, Progress, ResultRow, SessionRecord, Status
from fruitstream.errors import NotFoundError


def _session(row: Any) -> SessionRecord:
    return SessionRecord(
        session_id=row["session_id"],
        created_at=aware(row["created_at"]),
        submitted=row["submitted"],
        name=row["name"],
        owner=row.get("owner") or "",
    )


def _row(row: Any) -> ResultRow:
    return ResultRow(
        **{
            **row,
            "submitted_at": aware(row["submitted_at"]),
            "processed_at": aware(row["processed_at"]),
            "top_k": list(row["top_k"] or []),
        }
    )


class SqlResults(SqlEngine):
    """ResultStore, SessionStore and SubmitLog over the results, sessions and photos tables."""

    # --- ResultStore ----------------------------------------------------------------------

    def upsert(self, rows: Sequence[ResultRow]) -> None:
        if not rows:
            return
        values = [
            {**r.__dict__, "top_k": list(r.top_k)}
            for r in {r.image_id: r for r in rows}.values()  # last write wins within a batch
        ]
        stmt = self._insert(results_table)
        stmt = stmt.on_conflict_do_update(
            index_elements=["image_id"],
            set_={c.name: stmt.excluded[c.name] for c in results_table.c if c.name != "image_id"},
            # A photo classified once stays classified: a late error row for it (a second
            # attempt that lost its lease, a replay) never replaces the answer.
            where=sa.or_(results_table.c.status != Status.OK, stmt.excluded.status == Status.OK),
        )
        with self.begin() as conn:
            conn.execute(stmt, values)

    def result(self, image_id: str) -> ResultRow:
        with self.begin() as conn:
            row = (
                conn.execute(sa.select(results_table).where(results_table.c.image_id == image_id))
                .mappings()
                .first()
            )
        if row is None:
            raise NotFoundError(f"no result for image {image_id!r}")
        return _row(row)

    def results(
        self, session_id: str, limit: int | None = None, after: str | None = None
    ) -> list[ResultRow]:
        t = results_table
        q = sa.select(t).where(t.c.session_id == session_id)
        with self.begin() as conn:
            rows = keyset_page(
                conn, q, (t.c.filename, t.c.image_id), limit, after,
                missing=f"cursor {after!r} is not a row of session {session_id!r}",
                scope=[t.c.session_id == session_id],
            )  # fmt: skip
        return [_row(row) for row in rows]

    def progress(self, session_id: str) -> Progress:
        session = self.get_session(session_id)
        q = sa.select(
            sa.func.count(),
            sa.func.coalesce(
                sa.func.sum(sa.case((results_table.c.status == Status.ERROR, 1), else_=0)), 0
            ),
        ).where(results_table.c.session_id == session_id)
        with self.begin() as conn:
            done, errors = conn.execute(q).one()
        return Progress(session_id, session.submitted, int(done), int(errors))

    # --- SessionStore ---------------------------------------------------------------------

    def add_session(self, session: SessionRecord, photos: Sequence[ImageMessage] = ()) -> None:
        """Record a session and its photo list in one transaction, before anything is stored."""
        with self.begin() as conn:
            conn.execute(
                sa.insert(sessions_table).values(
                    **session.__dict__,
                    state="submitting" if photos else "submitted",
                    updated_at=datetime.now(UTC),
                )
            )
            if photos:
                conn.execute(
                    sa.insert(photos_table),
                    [
                        {
                            "image_id": m.image_id,
                            "session_id": m.session_id,
                            "filename": m.filename,
                            "object_key": m.object_key,
                            "submitted_at": m.submitted_at,
                            "position": i,
                        }
                        for i, m in enumerate(photos)
                    ],
                )

    def get_session(self, session_id: str) -> SessionRecord:
        q = sa.select(sessions_table).where(sessions_table.c.session_id == session_id)
        with self.begin() as conn:
            row = conn.execute(q).mappings().first()
        if row is None:
            raise NotFoundError(f"no session {session_id!r}")
        return _session(row)

    def sessions(
        self, limit: int = 50, before: str | None = None, owner: str | None = None
    ) -> list[SessionRecord]:
        t = sessions_table
        q = sa.select(t) if owner is None else sa.select(t).where(t.c.owner == owner)
        with self.begin() as conn:
            rows = keyset_page(
                conn, q, (t.c.created_at, t.c.session_id), limit, before,
                missing=f"cursor {before!r} is not a session", descending=True,
            )  # fmt: skip
        return [_session(r) for r in rows]

    # --- SubmitLog ------------------------------------------------------------------------

    def mark_queued(self, session_id: str, image_ids: Sequence[str], finished: bool) -> None:
        """Note photos as queued (or settled with an error row); ``finished``: all are."""
        with self.begin() as conn:
            if image_ids:
                conn.execute(
                    sa.update(photos_table)
                    .where(photos_table.c.image_id.in_(list(image_ids)))
                    .values(queued=True)
                )
            values: dict[str, Any] = {"updated_at": datetime.now(UTC)}
            if finished:
                values["state"] = "submitted"
            conn.execute(
                sa.update(sessions_table)
                .where(sessions_table.c.session_id == session_id)
                .values(**values)
            )

    def stalled(self, older_than: float) -> dict[str, list[ImageMessage]]:
        """Photos of submits that stopped half way (no progress for ``older_than`` seconds):
        neither queued nor with a result row, by session."""
        cutoff = datetime.now(UTC).timestamp() - older_than
        stuck = sa.select(sessions_table.c.session_id).where(
            sessions_table.c.state == "submitting",
            sessions_table.c.updated_at < datetime.fromtimestamp(cutoff, UTC),
        )
        has_result = sa.exists().where(results_table.c.image_id == photos_table.c.image_id)
        q = (
            sa.select(photos_table)
            .where(photos_table.c.session_id.in_(stuck), ~photos_table.c.queued, ~has_result)
            .order_by(photos_table.c.session_id)
        )
        with self.begin() as conn:
            sessions = [r[0] for r in conn.execute(stuck).all()]
            rows = conn.execute(q).mappings().all()
        found: dict[str, list[ImageMessage]] = {s: [] for s in sessions}
        for r in rows:
            found[r["session_id"]].append(_photo(r))
        return found

    def photo_list(self, session_id: str) -> list[ImageMessage]:
        t = photos_table
        q = sa.select(t).where(t.c.session_id == session_id).order_by(t.c.position, t.c.image_id)
        with self.begin() as conn:
            return [_photo(r) for r in conn.execute(q).mappings().all()]


def _photo(r: Any) -> ImageMessage:
    """A row of the photo list as the message it was planned as (no content hash)."""
    return ImageMessage(
        image_id=r["image_id"],
        session_id=r["session_id"],
        object_key=r["object_key"],
        filename=r["filename"],
        content_sha256="",
        submitted_at=aware(r["submitted_at"]),
    )
