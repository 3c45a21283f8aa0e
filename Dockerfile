# syntax=docker/dockerfile:1
#
# Image for the personalization platform: one image, three roles (web, worker, beat), chosen by the
# command (see docker/entrypoint.sh). Build: `docker build -t personalization .`

ARG PYTHON_IMAGE=python:3.11-slim

# --- deps: the runtime dependencies from pyproject.toml in a virtualenv ---------------------------
# Only pyproject.toml is copied, so this layer is rebuilt only when the dependencies change. The
# project itself is not pip-installed: its source is copied into /app below, so new apps
# (privacy/, segments/, ...) need no packaging change. Dev extras are not installed.
FROM ${PYTHON_IMAGE} AS deps

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /build
COPY pyproject.toml ./
# The import line fails the build, not a running container, if a runtime module goes missing.
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep=chr(10))" \
        > requirements.txt \
    && pip install --no-cache-dir -r requirements.txt \
    && python -c "import celery, django, django_redis, gunicorn, kombu.transport.redis, psycopg2, whitenoise"

# --- runtime --------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

# OPENBLAS_NUM_THREADS=1: the `implicit` recommender library wants OpenBLAS single-threaded (it
# runs its own thread pool); OMP_NUM_THREADS=1: one user's recommendations recomputed in a web request
# must not start an OpenMP thread team per call (scale with processes instead). PORT is where gunicorn listens inside the container.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DJANGO_SETTINGS_MODULE=personalization.settings \
    PORT=8000 \
    OPENBLAS_NUM_THREADS=1 \
    OMP_NUM_THREADS=1

# libgomp1: OpenMP runtime for `implicit`. libpq is not needed: psycopg2-binary bundles its own.
# Not version-pinned: Debian point releases replace package versions under the same base tag.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home --shell /usr/sbin/nologin app

COPY --from=deps /opt/venv /opt/venv

WORKDIR /app
COPY . .

# Static files are collected at build time (whitenoise serves them; the manifest storage hashes
# names). The settings refuse to load in production without secrets, so this step alone gets
# throwaway values: they exist only in this RUN's environment, never in the image's.
# The source stays root-owned and read-only to the app user; only media/ and var/ are writable.
RUN ENVIRONMENT=production \
    DEBUG=false \
    SECRET_KEY=collectstatic-at-build-time-only-not-a-real-secret-key \
    IDENTITY_HASH_KEY=collectstatic-at-build-time-only-not-a-real-hash-key \
    python manage.py collectstatic --noinput \
    && python -m compileall -q /app \
    && chmod 0755 docker/entrypoint.sh \
    && mkdir -p /app/media /app/var \
    && chown app:app /app/media /app/var

# Numeric, so orchestrators can verify that the user is not root (runAsNonRoot).
USER 10001:10001

EXPOSE 8000

# Liveness only (/healthz); compose checks readiness (/readyz: database + cache) for web.
# Worker and beat containers run from this image too and override or disable this check.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/app/docker/healthcheck.py", "/healthz"]

ENTRYPOINT ["/app/docker/entrypoint.sh"]
# Workers/threads come from WEB_CONCURRENCY / GUNICORN_THREADS (see docker/gunicorn.conf.py).
CMD ["gunicorn", "--config", "/app/docker/gunicorn.conf.py", "--access-logfile", "-", "personalization.wsgi"]
