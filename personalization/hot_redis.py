"""Redis for the request path: the django-redis client behind the default cache, and each thread's
own connection to it for the few commands a request makes (a cached recommendation's one round
trip, the change stamp an event request writes, the real-time segment queue).

Through the cache API or the client's pool, a command pays a pool lock, a fork check and a readiness
poll (two thirds of the client's CPU per call, ~0.1 ms). A thread here keeps one connection of its
own, made with the pool's settings, to the primary. Commands sent this way must be safe to send
twice: a connection that broke after it had worked (Redis restarted) is made again and the
command sent once more. Errors are redis-py's (RedisError, OSError).
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Any

from django.core.cache import cache


def redis_client():
    """The django-redis client behind the default cache (its `get_client`, `encode`, `decode`), or
    None when the cache is not Redis (the embedded mode's local memory)."""
    client = getattr(cache, "client", None)
    return client if client is not None and hasattr(client, "get_client") else None


class _Line(threading.local):
    """A thread's own connection for `hot_command`, with the client and process it belongs to."""

    conn = None
    owner: tuple[int, int] = (0, 0)
    answered = False  # the connection has answered since it was (re)made


_line = _Line()
_shas: dict[str, str] = {}


def _hot_connection(client):
    owner = (id(client), os.getpid())
    conn = _line.conn
    if conn is None or _line.owner != owner:
        pool = client.get_client(write=True).connection_pool  # the primary: stamps are written this way too
        if conn is not None:
            conn.disconnect()
        conn = _line.conn = pool.connection_class(**pool.connection_kwargs)
        _line.owner, _line.answered = owner, False
    return conn


def hot_command(client, *args) -> Any:
    """One command on this thread's own connection to the cache's Redis, and its raw reply (values
    undecoded, as `client.decode` reads them)."""
    return _hot(client, [args])[0]


def hot_pipeline(client, commands: list[tuple]) -> list:
    """Several commands in one write and one round trip on the thread's own connection, and their
    raw replies. An error reply raises (and drops the connection: the replies after it are unread)."""
    return _hot(client, commands) if commands else []


def _hot(client, commands: list[tuple]) -> list:
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import ResponseError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    conn = _hot_connection(client)
    for attempt in (1, 2):
        try:
            if len(commands) == 1:
                conn.send_command(*commands[0])
            else:
                conn.send_packed_command(conn.pack_commands(commands))
            replies = [conn.read_response() for _ in commands]
        except ResponseError:
            if len(commands) > 1:
                conn.disconnect()  # the replies after the error were not read
            raise  # else a whole reply (an error): the connection is fine
        except (RedisConnectionError, RedisTimeoutError, OSError):
            conn.disconnect()
            if attempt == 2 or not _line.answered:
                raise
            _line.answered = False
            continue
        except BaseException:
            conn.disconnect()  # a reply half read would answer the next command
            raise
        _line.answered = True
        return replies
    raise AssertionError("unreachable")  # pragma: no cover


def hot_script(client, source: str, keys: list[str], args: list) -> Any:
    """A Lua script through `hot_command`: by its hash, loaded on first use (or after a flush)."""
    from redis.exceptions import NoScriptError

    sha = _shas.get(source)
    if sha is None:
        sha = _shas[source] = hashlib.sha1(source.encode()).hexdigest()
    try:
        return hot_command(client, "EVALSHA", sha, len(keys), *keys, *args)
    except NoScriptError:
        return hot_command(client, "EVAL", source, len(keys), *keys, *args)
