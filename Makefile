# Two commands matter: `make run` (the service with demo data) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
FLASK := $(BIN)/flask --app survey
HOST ?= 127.0.0.1
PORT ?= 5000

.PHONY: run test lint format lock translations catalogs bench bench-review bench-insights bench-export bench-outbox soak clean

# Translation catalogs: text in the repository, compiled here (and into the wheel).
CATALOGS := $(wildcard survey/translations/*/LC_MESSAGES/messages.po)

$(BIN)/.installed: requirements-dev.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

survey/translations/%.mo: survey/translations/%.po $(BIN)/.installed
	$(BIN)/pybabel compile -i $< -o $@

catalogs: $(CATALOGS:.po=.mo)

## Extract the customer-facing strings and add the new ones to every catalog.
translations: $(BIN)/.installed
	$(BIN)/pybabel extract -F babel.cfg -k _l -k lazy_gettext --no-location --sort-output \
		--project "Exit Survey" --copyright-holder "Exit Survey" -o survey/translations/messages.pot .
	$(BIN)/pybabel update -i survey/translations/messages.pot -d survey/translations \
		--no-fuzzy-matching --ignore-obsolete

## Set up, migrate the SQLite default, load demo data, run the worker and serve.
run: export SURVEY_ENV = development
run: export SURVEY_BASE_URL ?= http://$(HOST):$(PORT)
run: $(BIN)/.installed catalogs
	$(FLASK) db upgrade
	$(FLASK) demo
	@echo "Serving on http://$(HOST):$(PORT) (emails land in instance/mail/). Ctrl-C stops."
	@# The server runs in the background too: the shell runs its trap (stop
	@# both) as soon as a signal comes, not once a foreground child has exited.
	@trap 'trap - INT TERM EXIT; kill 0' INT TERM EXIT; \
	$(FLASK) outbox send & \
	$(FLASK) run --host $(HOST) --port $(PORT) & \
	wait $$!

## Set up and run the whole suite (SQLite; PostgreSQL too when
## SURVEY_TEST_DATABASE_URL is set; browser tests when Chromium is installed).
test: $(BIN)/.installed catalogs lint
	@if [ -x /usr/bin/chromium ]; then echo "Chromium found: browser tests run."; \
	else echo "NOTE: /usr/bin/chromium not found: browser tests are SKIPPED (apt-get install chromium)."; fi
	@if [ -x /usr/sbin/nginx ]; then echo "nginx found: the README's proxy settings are tested."; \
	else echo "NOTE: /usr/sbin/nginx not found: the proxy test is SKIPPED (apt-get install nginx)."; fi
	@if [ -n "$$SURVEY_TEST_DATABASE_URL" ]; then echo "Databases: SQLite and $${SURVEY_TEST_DATABASE_URL%%@*}@..."; \
	else echo "Databases: SQLite only (set SURVEY_TEST_DATABASE_URL for PostgreSQL)."; fi
	$(BIN)/pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(BIN)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## Re-pin every dependency after editing pyproject.toml.
lock: $(BIN)/.installed
	$(BIN)/pip-compile --quiet --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links -o requirements.lock pyproject.toml
	$(BIN)/pip-compile --quiet --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links --extra dev -o requirements-dev.lock pyproject.toml

## Load benchmarks (needs wrk: apt-get install wrk); on PostgreSQL too with BENCH_PG.
# Both databases are measured even when SQLite misses a target; make fails after.
bench: $(BIN)/.installed
	@status=0; $(BIN)/python benchmarks/bench_survey.py || status=1; \
	if [ -n "$(BENCH_PG)" ]; then \
	  $(BIN)/python benchmarks/bench_survey.py --postgres $(BENCH_PG) || status=1; fi; \
	exit $$status

## Review queue at scale: seed 1M departures (SQLite; and BENCH_PG if set), time pages.
bench-review: $(BIN)/.installed
	@dir=$$(mktemp -d) && trap 'rm -rf "$$dir"' EXIT && \
	$(BIN)/python benchmarks/seed_review.py --database-url "sqlite:///$$dir/review.sqlite3" && \
	$(BIN)/python benchmarks/bench_review.py --database-url "sqlite:///$$dir/review.sqlite3"
	@if [ -n "$(BENCH_PG)" ]; then \
	  $(BIN)/python benchmarks/seed_review.py --database-url $(BENCH_PG) && \
	  $(BIN)/python benchmarks/bench_review.py --database-url $(BENCH_PG); fi

## Insights at scale: seed 1M departures (SQLite; and BENCH_PG if set), time the
## page and the API for 365 days, with each panel's share.
bench-insights: $(BIN)/.installed
	@dir=$$(mktemp -d) && trap 'rm -rf "$$dir"' EXIT && \
	$(BIN)/python benchmarks/seed_review.py --database-url "sqlite:///$$dir/insights.sqlite3" && \
	$(BIN)/python benchmarks/bench_insights.py --database-url "sqlite:///$$dir/insights.sqlite3"
	@if [ -n "$(BENCH_PG)" ]; then \
	  $(BIN)/python benchmarks/seed_review.py --database-url $(BENCH_PG) && \
	  $(BIN)/python benchmarks/bench_insights.py --database-url $(BENCH_PG); fi

## The deployment under load: two gunicorn servers, two mail workers, one
## PostgreSQL (SOAK_DATABASE_URL, a database of its own), a kill of each midway.
SOAK_SECONDS ?= 300
soak: $(BIN)/.installed catalogs
	$(BIN)/python benchmarks/soak.py --seconds $(SOAK_SECONDS)

## Win-back export of 1M contacts through gunicorn, as CSV and as JSON pages,
## beside a plain Core query; one person's data (and on BENCH_PG if set).
bench-export: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_export.py $(if $(BENCH_PG),--postgres $(BENCH_PG))

## Outbox throughput: 20,000 mixed messages through real workers (SQLite, one
## worker; and BENCH_PG with one and two workers); each must arrive once.
bench-outbox: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_outbox.py $(if $(BENCH_PG),--postgres $(BENCH_PG))

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache dist build
