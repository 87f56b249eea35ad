"""The results database in SQL (SQLAlchemy Core; SQLite by default, PostgreSQL too): every port."""

from __future__ import annotations

from fruitstream.adapters.sql_labels import SqlLabels
from fruitstream.adapters.sql_ops import SqlOps
from fruitstream.adapters.sql_results import SqlResults

# By module, over one engine (``sql_engine.SqlEngine``: transactions, errors, health):
#   sql_results  ResultStore, SessionStore, SubmitLog
#   sql_labels   LabelStore, ModelVersions
#   sql_ops      IdempotencyKeys, Callbacks, Heartbeats
# The tables and their migrations are in ``sql_schema``.


class SqlDatabase(SqlResults, SqlLabels, SqlOps):
    """Implements ResultsDatabase (every port of ``ports`` the results database serves, and
    its health) on one SQLAlchemy engine: ``SqlDatabase.from_url(url)``."""
