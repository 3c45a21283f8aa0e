# Two commands: `make run` (embedded demo on SQLite) and `make test` (lint, checks and tests on Postgres + Redis).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/personalization
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
TEST_ENV := DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL)
# The recommender libraries run single-threaded per process (implicit wants OpenBLAS so; scale with processes).
export OPENBLAS_NUM_THREADS := 1
export OMP_NUM_THREADS := 1

.PHONY: run test install services browser lint check schema pytest bench bench-ingest bench-segments bench-recommenders bench-experiments bench-data clean

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

# Benchmarks print their figures next to a baseline measured in the same run. MovieLens-100K comes
# from the recbole package's example files (read in place, never copied into the repository).
bench: bench-ingest bench-segments bench-recommenders bench-experiments

bench-data: install
	@$(PY) -c "import importlib.util as u; exit(0 if u.find_spec('recbole') else 1)" 2>/dev/null || \
		$(PY) -m pip install --quiet --no-deps recbole==1.2.1

bench-ingest: install services
	$(TEST_ENV) $(PY) bench/ingest.py

bench-segments: install services
	$(TEST_ENV) $(PY) bench/segments.py

bench-recommenders: install services bench-data
	$(TEST_ENV) $(PY) bench/recommenders.py

bench-experiments: install services
	$(TEST_ENV) $(PY) bench/experiments.py

clean:
	rm -rf $(VENV) db.sqlite3 staticfiles .pytest_cache .ruff_cache
