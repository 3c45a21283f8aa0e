"""Gunicorn settings for the container, all overridable from the environment.

WEB_CONCURRENCY    worker processes (default 2)
GUNICORN_THREADS   threads per worker (default 4; >1 selects the threaded worker,
                   `personalization.gunicorn_worker.ThreadWorker`: gunicorn's gthread worker that
                   hands kept-alive connections back when it holds more requests than threads)
GUNICORN_REBALANCE_AFTER  requests a kept-alive connection carries before a busy worker may close
                   it, so that a few long-lived connections (a proxy's pool, a server-side
                   renderer) move to the worker with room (default 20; 0 never)
GUNICORN_SWITCH_INTERVAL_MS  how long a request thread may keep the interpreter lock while another
                   waits for it, in the threaded worker (default 1; Python's own is 5)
GUNICORN_TIMEOUT   seconds a request may take before its worker is restarted (default 30)
GUNICORN_GRACEFUL_TIMEOUT  seconds to finish in-flight requests on SIGTERM (default 30)
GUNICORN_KEEPALIVE seconds to hold an idle keep-alive connection (default 5)
GUNICORN_MAX_REQUESTS  requests before a worker is recycled (default 100000, plus up to 50% jitter;
                   0 disables)
PORT               port to listen on inside the container (default 8000)
LOG_LEVEL          gunicorn's error-log level (default info); access log always to stdout

Each thread may hold a database connection (CONN_MAX_AGE), so one web container opens up to
WEB_CONCURRENCY x GUNICORN_THREADS connections to Postgres.
"""

import os


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


bind = f"0.0.0.0:{_int('PORT', 8000)}"
workers = _int("WEB_CONCURRENCY", 2)
threads = _int("GUNICORN_THREADS", 4)
if threads > 1:
    worker_class = "personalization.gunicorn_worker.ThreadWorker"
timeout = _int("GUNICORN_TIMEOUT", 30)
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)
keepalive = _int("GUNICORN_KEEPALIVE", 5)
# Recycle workers now and then so a slow leak cannot grow forever (0 disables).
# Recycling a worker costs ~3 s of CPU plus reloading the live models (at 20,000 requests, a worker
# busy at ~1,000 req/s would boot again every 20-30 s): rarely, and spread out (50% jitter) so that
# workers never restart together.
max_requests = _int("GUNICORN_MAX_REQUESTS", 100000)
max_requests_jitter = max_requests // 2
# Heartbeat files on tmpfs: a container's overlay filesystem can stall them.
worker_tmp_dir = "/dev/shm"
# No control socket (gunicorn 25.1+ creates one under $HOME, which is read-only here); unknown
# settings are ignored by older gunicorn versions.
control_socket_disable = True
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()


def worker_exit(server, worker):
    """A worker stopping (recycled, or the container stopping) pushes the served-list rows it still
    holds to the Redis buffer first (see `recommenders.serving.served`)."""
    try:
        from recommenders.serving.served import served_push

        served_push()
    except Exception:  # never keep a worker from exiting
        server.log.exception("served lists of worker %s could not be pushed", worker.pid)
