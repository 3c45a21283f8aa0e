"""The real-time refresh's prepared statements (Postgres): same answers as plain statements, a text
Postgres cannot prepare still runs, and a long-lived connection keeps a bounded number of them."""

from __future__ import annotations

import pytest
from django.db import connection

from segments import prepared

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif("connection.vendor != 'postgresql'", reason="prepared statements are a Postgres path"),
]


def run(sql: str, params: list):
    with connection.cursor() as cursor:
        prepared.execute_prepared(cursor, sql, params)
        return cursor.fetchall()


def server_side_names() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM pg_prepared_statements WHERE name LIKE 'seg\\_%%'")
        return {name for (name,) in cursor.fetchall()}


def test_a_prepared_statement_answers_like_the_plain_one_each_time():
    before = server_side_names()
    sql = "SELECT %s::bigint * 2, 'a%%b' LIKE %s, %s::timestamptz < now()"
    first = run(sql, [21, "a%", "2020-01-01T00:00:00+00:00"])
    again = run(sql, [4, "z%", "2999-01-01T00:00:00+00:00"])
    assert first == [(42, True, True)]
    assert again == [(8, False, False)]
    assert len(server_side_names() - before) == 1  # prepared once, executed twice


def test_a_statement_postgres_cannot_prepare_still_runs_and_leaves_the_transaction_usable():
    before = server_side_names()
    assert run("SELECT %s + %s", [1, 2]) == [(3,)]  # "operator is not unique: unknown + unknown" when prepared
    assert run("SELECT %s + %s", [2, 2]) == [(4,)]
    assert run("SELECT count(*) FROM django_migrations WHERE id > %s::int", [-1])[0][0] > 0
    assert len(server_side_names() - before) == 1  # only the last one


def test_a_connection_keeps_a_bounded_number_of_prepared_statements_and_others_statements(monkeypatch):
    with connection.cursor() as cursor:  # another app's prepared statement in the same session
        cursor.execute("PREPARE other_app_statement AS SELECT $1::int * 3")
    monkeypatch.setattr(prepared, "MAX_PER_SESSION", 5)
    for n in range(12):
        assert run(f"SELECT %s::int + {n}", [1]) == [(1 + n,)]
    assert 1 <= len(server_side_names()) <= 5
    with connection.cursor() as cursor:
        cursor.execute("EXECUTE other_app_statement(7)")
        assert cursor.fetchone() == (21,)
        cursor.execute("DEALLOCATE other_app_statement")
