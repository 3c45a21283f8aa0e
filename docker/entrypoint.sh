#!/usr/bin/env bash
# Container entrypoint: wait for Postgres (and Redis), migrate when this is a web container, then
# exec the command so it runs as PID 1 and receives signals (graceful stop on SIGTERM).
#
# Roles: web (gunicorn), worker (celery worker), beat (celery beat). The role is APP_ROLE when set,
# otherwise read from the command. The bare words `web`, `worker` and `beat` are shorthands for the
# default command of that role. Any other command (`python manage.py shell`, `bash`, ...) is run as
# is, without waiting or migrating.
#
# Environment:
#   MIGRATE_ON_START       run `manage.py migrate --noinput` before starting (web only; default true)
#   WAIT_FOR_SERVICES      wait for the database/Redis before starting (default true)
#   SERVICE_WAIT_TIMEOUT   seconds to wait for each of them before giving up (default 60)
#   CELERY_WORKER_QUEUES   `worker` shorthand: comma-separated queues (default: the app's default queue)
#   CELERY_WORKER_CONCURRENCY  `worker` shorthand: worker processes (default: number of CPUs)
#   CELERY_BEAT_SCHEDULE_FILE  `beat` shorthand: schedule file (default /app/var/celerybeat-schedule)
#   LOG_LEVEL              log level of celery (default INFO; gunicorn reads it in gunicorn.conf.py)
set -euo pipefail

log() { echo "[entrypoint] $*" >&2; }

is_true() {
    case "$(printf '%s' "${1:-}" | tr '[:upper:]' '[:lower:]')" in
        1 | true | yes | on) return 0 ;;
        *) return 1 ;;
    esac
}

if [ "$#" -eq 0 ]; then
    set -- web
fi

log_level="${LOG_LEVEL:-INFO}"

# Shorthands for each role's default command.
case "$1" in
    web)
        shift
        set -- gunicorn --config /app/docker/gunicorn.conf.py --access-logfile - personalization.wsgi "$@"
        ;;
    worker)
        shift
        extra=()
        if [ -n "${CELERY_WORKER_QUEUES:-}" ]; then extra+=(--queues "$CELERY_WORKER_QUEUES"); fi
        if [ -n "${CELERY_WORKER_CONCURRENCY:-}" ]; then extra+=(--concurrency "$CELERY_WORKER_CONCURRENCY"); fi
        set -- celery -A personalization worker --loglevel "$log_level" "${extra[@]}" "$@"
        ;;
    beat)
        shift
        set -- celery -A personalization beat --loglevel "$log_level" \
            --schedule "${CELERY_BEAT_SCHEDULE_FILE:-/app/var/celerybeat-schedule}" "$@"
        ;;
esac

# Which role is this?
role="${APP_ROLE:-}"
if [ -z "$role" ]; then
    case "$1" in
        gunicorn | */gunicorn) role=web ;;
        celery | */celery)
            role=other
            for arg in "$@"; do
                case "$arg" in
                    worker) role=worker; break ;;
                    beat) role=beat; break ;;
                esac
            done
            ;;
        *) role=other ;;
    esac
fi

case "$role" in
    web | worker | beat)
        prestart_args=(--timeout "${SERVICE_WAIT_TIMEOUT:-60}")
        if [ "$role" = web ] && is_true "${MIGRATE_ON_START:-true}"; then
            prestart_args+=(--migrate)
        fi
        if is_true "${WAIT_FOR_SERVICES:-true}" || [[ " ${prestart_args[*]} " == *" --migrate "* ]]; then
            log "role $role: preparing (${prestart_args[*]})"
            python /app/docker/prestart.py "${prestart_args[@]}"
        fi
        ;;
esac

log "role $role: exec $*"
exec "$@"
