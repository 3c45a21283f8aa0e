"""Settings, all read from the environment here and nowhere else.

With nothing set, the platform runs embedded: SQLite, local-memory cache and Celery tasks run
inline. `DATABASE_URL` and `REDIS_URL` switch to Postgres, Redis cache and a Redis broker.
`ENVIRONMENT=production` refuses to start with the development secret key or with DEBUG on.
"""

from datetime import timedelta
from pathlib import Path

import environ
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEV_SECRET_KEY = "dev-insecure-0f1c2b7e-change-me-in-production"

ENVIRONMENT = env.str("ENVIRONMENT", default="development")
PRODUCTION = ENVIRONMENT == "production"
SECRET_KEY = env.str("SECRET_KEY", default="") or DEV_SECRET_KEY  # an empty value in .env counts as unset
DEBUG = env.bool("DEBUG", default=not PRODUCTION)

if PRODUCTION:
    if SECRET_KEY == DEV_SECRET_KEY or len(SECRET_KEY) < 32:
        raise ImproperlyConfigured("ENVIRONMENT=production needs SECRET_KEY set to a random value of 32+ characters.")
    if DEBUG:
        raise ImproperlyConfigured("ENVIRONMENT=production refuses to start with DEBUG on; unset DEBUG.")

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["*"] if not PRODUCTION else [])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# Public URL of this server, used in the embed snippet shown to marketers; empty means "the current request's".
PUBLIC_URL = env.str("PUBLIC_URL", default="")

INSTALLED_APPS = [
    "unfold",
    "unfold.contrib.filters",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "tracking",
    "privacy",
    "segments",
    "recommenders",
    "experiments",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "personalization.api.cors.CorsMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "personalization.urls"
WSGI_APPLICATION = "personalization.wsgi.application"
ASGI_APPLICATION = "personalization.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DB_CONN_MAX_AGE", default=60))
# A health check costs a round trip per request; off by default, on if the database may drop idle links.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = env.bool("DB_CONN_HEALTH_CHECKS", default=False)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the demo server read while the inline tasks write.
    DATABASES["default"].setdefault("OPTIONS", {})["init_command"] = "PRAGMA journal_mode=WAL;"
    DATABASES["default"]["OPTIONS"]["transaction_mode"] = "IMMEDIATE"
    DATABASES["default"]["CONN_MAX_AGE"] = 0
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="pz"),
            "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient", "IGNORE_EXCEPTIONS": False},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "pz"}}

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL or "memory://")
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=REDIS_URL or "cache+memory://")
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=not REDIS_URL)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
# The one beat schedule of the platform.
CELERY_BEAT_SCHEDULE: dict = {
    "retention-purge": {"task": "privacy.retention_purge", "schedule": crontab(hour=3, minute=17)},
    # segments
    "segments-recompute": {"task": "segments.recompute_all", "schedule": crontab(minute="*/15")},
    "segments-train-scores": {"task": "segments.train_scores", "schedule": crontab(hour=2, minute=41)},
    # recommenders
    "recommenders-train": {"task": "recommenders.train_all", "schedule": crontab(hour=1, minute=23)},
    "recommenders-health": {"task": "recommenders.health_check", "schedule": crontab(minute="*/30")},
    "recommenders-served-flush": {"task": "recommenders.served_flush", "schedule": 5.0},
    # experiments
    "experiments-rollup": {"task": "experiments.rollup", "schedule": crontab(minute="*")},
}

# Segments (settings of the segments app go here).
# ML scores: churn = no activity in the next N days; trained on profiles active in the lookback before.
SEGMENTS_CHURN_HORIZON_DAYS = env.int("SEGMENTS_CHURN_HORIZON_DAYS", default=30)
SEGMENTS_CHURN_LOOKBACK_DAYS = env.int("SEGMENTS_CHURN_LOOKBACK_DAYS", default=365)
# Number of RFM clusters; 0 chooses 3 to 6 by silhouette.
SEGMENTS_RFM_CLUSTERS = env.int("SEGMENTS_RFM_CLUSTERS", default=0)
SEGMENTS_SCORE_SEED = env.int("SEGMENTS_SCORE_SEED", default=0)
# Threads for training (1: Celery already runs a worker process per core).
SEGMENTS_SCORE_THREADS = env.int("SEGMENTS_SCORE_THREADS", default=1)
SEGMENTS_REALTIME = env.bool("SEGMENTS_REALTIME", default=True)
SEGMENTS_REALTIME_DEBOUNCE_SECONDS = env.float("SEGMENTS_REALTIME_DEBOUNCE_SECONDS", default=2.0)
# Wait for the WAL flush when a real-time refresh commits (off: memberships are derived state that the
# 15-minute recompute rebuilds; a database crash can lose the last fraction of a second of them).
SEGMENTS_REALTIME_SYNCHRONOUS_COMMIT = env.bool("SEGMENTS_REALTIME_SYNCHRONOUS_COMMIT", default=False)
SEGMENTS_PREVIEW_SAMPLE_MAX = env.int("SEGMENTS_PREVIEW_SAMPLE_MAX", default=100)
SEGMENTS_RECOMPUTE_WORK_MEM = env.str("SEGMENTS_RECOMPUTE_WORK_MEM", default="64MB")
# Recommenders (settings of the recommenders app go here).
# Served-list log: buffered in Redis and written in bulk by `recommenders.served_flush` once this many
# rows wait, or after this many seconds (off: one synchronous INSERT per list served).
RECOMMENDERS_SERVED_BUFFER = env.bool("RECOMMENDERS_SERVED_BUFFER", default=True)
RECOMMENDERS_SERVED_FLUSH_SIZE = env.int("RECOMMENDERS_SERVED_FLUSH_SIZE", default=500)
RECOMMENDERS_SERVED_FLUSH_SECONDS = env.float("RECOMMENDERS_SERVED_FLUSH_SECONDS", default=5.0)
# ... and each web process gathers its rows for this long before one RPUSH sends them (0: one RPUSH
# per list served, in the request).
RECOMMENDERS_SERVED_PUSH_SECONDS = env.float("RECOMMENDERS_SERVED_PUSH_SECONDS", default=0.1)
# After a version goes live, the visitor cache is warmed for at most this many recently active
# profiles (their identities -> profile and consent, so their first cached answer reads no database).
RECOMMENDERS_VISITOR_WARM_MAX = env.int("RECOMMENDERS_VISITOR_WARM_MAX", default=100_000)
# Serving: largest list per request, the visitor events read per request (newest first), the list
# length scored when recomputing on read, and the positive items below which a visitor is served
# item-to-item from their session rather than the full model (cold start).
RECOMMENDERS_SERVE_MAX_N = env.int("RECOMMENDERS_SERVE_MAX_N", default=100)
RECOMMENDERS_SERVE_HISTORY_EVENTS = env.int("RECOMMENDERS_SERVE_HISTORY_EVENTS", default=100)
RECOMMENDERS_SERVE_RECOMPUTE_N = env.int("RECOMMENDERS_SERVE_RECOMPUTE_N", default=50)
RECOMMENDERS_COLD_START_ITEMS = env.int("RECOMMENDERS_COLD_START_ITEMS", default=3)
RECOMMENDERS_SERVE_CONTENT_SCAN = env.int("RECOMMENDERS_SERVE_CONTENT_SCAN", default=5000)
# A catalogue change (stock, price) shows in every web process within this many seconds: each reads the
# catalogue change log this often and drops the rows it names (recommenders/serving/items.py; 0: no memo).
RECOMMENDERS_SERVE_ITEM_CACHE_SECONDS = env.float("RECOMMENDERS_SERVE_ITEM_CACHE_SECONDS", default=1.0)
# A visitor's list and change stamp are kept in the web process while Redis reports no change to
# them (client-side caching with invalidations), at most this long (each between half of it and all
# of it, at random); 0: read Redis every time.
RECOMMENDERS_SERVE_NEAR_CACHE_SECONDS = env.float("RECOMMENDERS_SERVE_NEAR_CACHE_SECONDS", default=300.0)
# Trending: window and half-life of recent events, visitors an item needs to trend in a slice,
# members a segment needs to have its own list, and the list length kept per slice.
RECOMMENDERS_TRENDING_DAYS = env.int("RECOMMENDERS_TRENDING_DAYS", default=7)
RECOMMENDERS_TRENDING_HALF_LIFE_DAYS = env.float("RECOMMENDERS_TRENDING_HALF_LIFE_DAYS", default=2.0)
RECOMMENDERS_TRENDING_MIN_VISITORS = env.int("RECOMMENDERS_TRENDING_MIN_VISITORS", default=2)
RECOMMENDERS_TRENDING_MIN_SEGMENT = env.int("RECOMMENDERS_TRENDING_MIN_SEGMENT", default=20)
RECOMMENDERS_TRENDING_DEPTH = env.int("RECOMMENDERS_TRENDING_DEPTH", default=200)
# Events older than this many days are not read into the interaction matrix.
RECOMMENDERS_HISTORY_DAYS = env.int("RECOMMENDERS_HISTORY_DAYS", default=365)
# Users whose latest interactions are held out to evaluate a training (a random sample beyond this).
RECOMMENDERS_EVAL_USERS = env.int("RECOMMENDERS_EVAL_USERS", default=5000)
# Up to this many interactions, the model is refitted on everything after evaluation; above, the
# evaluated model (fitted without the sample's held-out interactions) is the one published.
RECOMMENDERS_REFIT_MAX_NNZ = env.int("RECOMMENDERS_REFIT_MAX_NNZ", default=1_000_000)
# Precomputed lists written to Redis per pipeline round trip.
RECOMMENDERS_PUBLISH_BATCH = env.int("RECOMMENDERS_PUBLISH_BATCH", default=2000)
# Health check: CTR drop (relative to the first days of the live version) and event-type shift
# (total variation distance, 0..1) that raise an alert and enqueue a retrain.
RECOMMENDERS_CTR_MIN_IMPRESSIONS = env.int("RECOMMENDERS_CTR_MIN_IMPRESSIONS", default=200)
RECOMMENDERS_CTR_DROP = env.float("RECOMMENDERS_CTR_DROP", default=0.3)
RECOMMENDERS_DRIFT_THRESHOLD = env.float("RECOMMENDERS_DRIFT_THRESHOLD", default=0.2)
# Artifacts of this many most recent non-live versions per configuration are kept in storage.
RECOMMENDERS_ARTIFACTS_KEEP = env.int("RECOMMENDERS_ARTIFACTS_KEEP", default=5)
# Experiments (settings of the experiments app go here).
# Consent purpose a visitor must allow to enter an experiment that names none.
EXPERIMENTS_CONSENT_PURPOSE = env.str("EXPERIMENTS_CONSENT_PURPOSE", default="analytics")
# The roll-up reads events stored at least this long ago, so a transaction still committing a lower
# event id is not skipped.
EXPERIMENTS_ROLLUP_LAG_SECONDS = env.float("EXPERIMENTS_ROLLUP_LAG_SECONDS", default=10.0)
# A results snapshot (uplift-over-time chart) is kept at most this often per experiment.
EXPERIMENTS_SNAPSHOT_MINUTES = env.int("EXPERIMENTS_SNAPSHOT_MINUTES", default=60)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
MEDIA_URL = "media/"
MEDIA_ROOT = env.path("MEDIA_ROOT", default=BASE_DIR / "media")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = not PRODUCTION
WHITENOISE_AUTOREFRESH = not PRODUCTION

if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_CONTENT_TYPE_NOSNIFF = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["personalization.api.auth.SecretKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["personalization.api.auth.HasSecretKey"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "personalization.api.pagination.CursorPagination",
    "EXCEPTION_HANDLER": "personalization.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
    "PAGE_SIZE": 50,
    # ASCII escapes in answers: an echoed bad value (a lone UTF-16 surrogate) can never break the encoder.
    "UNICODE_JSON": False,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Personalization platform API",
    "DESCRIPTION": (
        "Collect events (own API, Segment-compatible API, GIF pixel, JS snippet), read profiles, and more. "
        "Public write keys go in `X-Write-Key` or as the HTTP Basic user; secret keys as "
        "`Authorization: Bearer <secret>`."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SERVE_AUTHENTICATION": [],
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "ENUM_NAME_OVERRIDES": {
        "EventKindEnum": "tracking.models.Event.Kind",
        "SubjectRequestKindEnum": "privacy.models.SubjectRequest.Kind",
    },
}

UNFOLD = {
    "SITE_TITLE": "Personalization",
    "SITE_HEADER": "Personalization",
    "SITE_SYMBOL": "insights",
    "SHOW_HISTORY": True,
    "DASHBOARD_CALLBACK": "personalization.dashboard.dashboard_callback",
    "SIDEBAR": {"show_search": True, "show_all_applications": True},
}

# --- Collection --------------------------------------------------------------------------------
# Key for the keyed hashes (HMAC-SHA256) that stand in for user ids and emails. Rotating it is a
# documented procedure (README); in development it is derived from SECRET_KEY.
IDENTITY_HASH_KEY = env.str("IDENTITY_HASH_KEY", default="")
# Keys being rotated out, comma-separated: identifiers hashed with them move to the current key on use.
IDENTITY_HASH_OLD_KEYS = env.list("IDENTITY_HASH_OLD_KEYS", default=[])
if PRODUCTION and len(IDENTITY_HASH_KEY) < 32:
    raise ImproperlyConfigured("ENVIRONMENT=production needs IDENTITY_HASH_KEY (32+ random characters).")
# Fernet keys (comma-separated, newest first) for the traits sources keep encrypted at rest; the
# first encrypts, all decrypt, and `manage.py rotate_encryption_keys` re-encrypts with the first.
# Empty: one key derived from SECRET_KEY (set real ones in production).
FIELD_ENCRYPTION_KEYS = env.list("FIELD_ENCRYPTION_KEYS", default=[])
# Purpose of event types no purpose lists (privacy admin: Purposes).
CONSENT_DEFAULT_PURPOSE = env.str("CONSENT_DEFAULT_PURPOSE", default="analytics")
# Request header set by a trusted proxy or CDN with the visitor's ISO country (e.g. CF-IPCountry).
GEO_COUNTRY_HEADER = env.str("GEO_COUNTRY_HEADER", default="")
# How many reverse proxies in front of the platform append to X-Forwarded-For (0: use REMOTE_ADDR).
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
INGEST_MAX_EVENT_BYTES = env.int("INGEST_MAX_EVENT_BYTES", default=32 * 1024)
INGEST_MAX_BATCH_BYTES = env.int("INGEST_MAX_BATCH_BYTES", default=500 * 1024)
INGEST_MAX_BATCH_EVENTS = env.int("INGEST_MAX_BATCH_EVENTS", default=2500)
INGEST_MAX_FUTURE = timedelta(seconds=env.int("INGEST_MAX_FUTURE_SECONDS", default=3600))
INGEST_SESSION_GAP = timedelta(minutes=env.int("INGEST_SESSION_GAP_MINUTES", default=30))
IMPORT_MAX_BYTES = env.int("IMPORT_MAX_BYTES", default=20 * 1024 * 1024)
# Anonymous-id cookie lifetime that the snippet uses when its source sets none.
SNIPPET_COOKIE_DAYS = env.int("SNIPPET_COOKIE_DAYS", default=395)
# Mounts the benchmark's no-storage floor view; never set this in production.
BENCH_FLOOR_ENABLED = env.bool("BENCH_FLOOR_ENABLED", default=False)
# Bodies are size-checked per endpoint (collection 500 KB, imports IMPORT_MAX_BYTES).
DATA_UPLOAD_MAX_MEMORY_SIZE = IMPORT_MAX_BYTES + 1024
