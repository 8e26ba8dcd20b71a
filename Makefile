# trove-es: `make run` starts the whole stack on embedded defaults; `make test` runs every test.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test unit integration bench lint docs clean

install: $(STAMP)

# Reinstall only when the declared dependencies change.
$(STAMP): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: install
	$(BIN)/trove-es up

# Starts what the tests need itself (the broker); needs the PostgreSQL service, and under CI
# (CI=true) fails instead of skipping when it is unreachable.
test: install
	$(BIN)/python -m pytest -p no:cacheprovider -q tests

unit: install
	$(BIN)/python -m pytest -q tests/unit

integration: install
	$(BIN)/python -m pytest -q tests/integration

bench: install
	PYTHONPATH=. $(BIN)/python benchmarks/pipeline.py
	PYTHONPATH=. $(BIN)/python benchmarks/api.py
	PYTHONPATH=. $(BIN)/python benchmarks/replay.py

docs: install
	$(BIN)/python -m adapters.notification_docs

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) var build *.egg-info .pytest_cache .ruff_cache
