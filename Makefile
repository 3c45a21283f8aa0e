# Two commands: `make run` (embedded demo on SQLite) and `make test` (lint, checks and tests on Postgres + Redis).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/personalization
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
TEST_ENV := DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) OPENBLAS_NUM_THREADS=1

.PHONY: run test install services browser lint check schema pytest bench clean

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(VENV)/.installed

run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_demo --admin --origin http://$(HOST):$(PORT)
	@echo ""
	@echo "  Admin:            http://$(HOST):$(PORT)/admin/   (user demo, password demo-admin)"
	@echo "  API docs:         http://$(HOST):$(PORT)/api/docs/"
	@echo "  Demo storefront:  http://$(HOST):$(PORT)/demo/"
	@echo ""
	$(PY) manage.py runserver $(HOST):$(PORT)

services:
	@scripts/services.sh

browser:
	@scripts/browser.sh

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

check: install services
	$(TEST_ENV) $(PY) manage.py makemigrations --check --dry-run
	$(TEST_ENV) $(PY) manage.py spectacular --validate --fail-on-warn --file /dev/null

pytest: install services browser
	$(TEST_ENV) $(VENV)/bin/pytest $(PYTEST_ARGS)

test: install services browser lint check pytest

bench: install services
	$(TEST_ENV) $(PY) bench/ingest.py

clean:
	rm -rf $(VENV) db.sqlite3 staticfiles .pytest_cache .ruff_cache
