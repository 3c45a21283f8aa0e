#!/usr/bin/env bash
# Make sure Postgres (127.0.0.1:5432) and Redis (127.0.0.1:6379) answer; start this machine's local
# services when they are down, otherwise say exactly what to start.
set -euo pipefail

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {
  for _ in $(seq 1 30); do answers "$1" && return 0; sleep 0.5; done
  return 1
}

if ! answers 5432; then
  if ls /etc/postgresql >/dev/null 2>&1 && command -v pg_ctlcluster >/dev/null; then
    echo "Postgres is down: starting the local cluster"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
  wait_for 5432 || {
    echo "Postgres does not answer on 127.0.0.1:5432. Start one, for example:" >&2
    echo "  docker run -d -p 127.0.0.1:5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust postgres:16" >&2
    echo "or point TEST_DATABASE_URL at a Postgres you have (make test TEST_DATABASE_URL=postgres://...)." >&2
    exit 1
  }
fi

if ! answers 6379; then
  if command -v redis-server >/dev/null; then
    echo "Redis is down: starting a local one"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  fi
  wait_for 6379 || {
    echo "Redis does not answer on 127.0.0.1:6379. Start one, for example:" >&2
    echo "  docker run -d -p 127.0.0.1:6379:6379 redis:7   (or set TEST_REDIS_URL=redis://...)" >&2
    exit 1
  }
fi

if command -v psql >/dev/null; then
  if ! psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='personalization'" 2>/dev/null | grep -q 1; then
    psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE personalization" 2>/dev/null || true
  fi
fi
echo "Postgres and Redis answer."
