# The two set-up commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
export REFERRAL_HOME ?= $(CURDIR)/instance

.PHONY: run test install install-test lint translations clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .
	$(MAKE) --no-print-directory translations

install-test: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	$(MAKE) --no-print-directory translations

translations:
	@if [ -d referral_service/translations ] && ls referral_service/translations/*/LC_MESSAGES/*.po >/dev/null 2>&1; then \
		$(BIN)/pybabel -q compile -d referral_service/translations; fi

## Run the whole service on the embedded profile with demo data (http://127.0.0.1:$(PORT)).
run: install
	$(BIN)/referral-service init
	$(BIN)/referral-service demo
	REFERRAL_INSECURE_COOKIES=1 $(BIN)/referral-service run --port $(PORT)

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

## Install and run the whole test suite (unit, integration on PostgreSQL/RabbitMQ, e2e with Chromium).
## Test files are spread over TEST_PROCESSES processes (each test's database, vhost, ports and folders
## are its own); the tests that restart the shared servers run after, alone.
TEST_PROCESSES ?= 3
test: install-test lint
	$(BIN)/python -m pytest -n $(TEST_PROCESSES) --dist loadfile -m "not restarts_servers"
	$(BIN)/python -m pytest -m restarts_servers

clean:
	rm -rf $(VENV) instance test-output
