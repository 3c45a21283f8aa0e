"""Database helpers for hot paths: server-side prepared statements on Postgres."""

from __future__ import annotations

import hashlib
import re

from django.db import connection
from django.db.utils import ProgrammingError

_PLACEHOLDER = re.compile(r"%s")


def execute_prepared(cursor, sql: str, params: list) -> None:
    """Run `sql` (with %s placeholders) as a prepared statement, prepared once per database connection.

    Planning a large statement can cost more than running it; on the ingestion hot path it is done
    once per connection instead of once per request."""
    name = "pz_" + hashlib.sha256(sql.encode()).hexdigest()[:20]
    raw = connection.connection
    state = getattr(connection, "_pz_prepared", None)
    if state is None or state[0] is not raw:
        state = (raw, set())
        connection._pz_prepared = state
    if name not in state[1]:
        counter = iter(range(1, len(params) + 1))
        cursor.execute(f"PREPARE {name} AS " + _PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql))
        state[1].add(name)
    try:
        cursor.execute(f"EXECUTE {name}(" + ", ".join(["%s"] * len(params)) + ")", params)
    except ProgrammingError:
        # Prepared statements live per server session (a pooler may have switched it): forget ours.
        state[1].clear()
        raise
