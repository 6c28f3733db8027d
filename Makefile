# Two commands a newcomer needs: `make dev` (platform on demo data, UI on 127.0.0.1:3000) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PEOPLE ?= 10000
SEED ?= 42
DAGSTER_HOME ?= $(CURDIR)/.dagster_home
HOST ?= 127.0.0.1
PORT ?= 3000
# The demo's write key for the collector's `website` source; a deployment sets its own (see README).
CDP_COLLECTOR_WRITE_KEYS ?= website:demo-write-key
export CDP_COLLECTOR_WRITE_KEYS
export DAGSTER_HOME

.PHONY: install spark demo-data demo-destination collector materialize dev test test-fast lint bench bench-identity bench-collector clean-data

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/.installed

# The Spark engine's extra (pyspark, about 460 MB), kept out of `install`: only the tests and Spark need it.
$(BIN)/.spark-installed: $(BIN)/.installed pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,spark]'
	@touch $@

# The Spark similarity UDFs compiled from resources/spark/java with javac against pyspark's jars, into
# build/spark/cdp-spark-udfs.jar (rebuilt when a source changes; never downloaded, never committed).
spark: $(BIN)/.spark-installed
	$(BIN)/python -m resources.spark.udfs

# Demo data is generated, never committed; regenerate with `make demo-data PEOPLE=100000`.
data/ground_truth.csv: | $(BIN)/.installed
	$(BIN)/python -m demo.generate --people $(PEOPLE) --seed $(SEED) --out data/landing --truth data/ground_truth.csv

demo-data: install
	$(BIN)/python -m demo.generate --people $(PEOPLE) --seed $(SEED) --out data/landing --truth data/ground_truth.csv

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	@mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

# The local HTTP destination the demo's webhook, rest and audience syncs deliver to, on the port their
# URLs in cdp.yaml name.
demo-destination: install
	$(BIN)/python -m demo.destination_server --host 127.0.0.1 --port 8765

# The event collector (Segment's tracking API) on collector.port of cdp.yaml, 8088 by default.
collector: install
	$(BIN)/python -m collector

# Headless full refresh; the demo's HTTP syncs need `make demo-destination` running alongside.
materialize: install data/ground_truth.csv $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster job execute -m cdp_assets.definitions -j full_refresh

# Demo destination and event collector in the background for as long as the UI runs, then a full
# refresh, then the UI.
dev: install data/ground_truth.csv $(DAGSTER_HOME)/dagster.yaml
	@$(BIN)/python -m demo.destination_server --host 127.0.0.1 --port 8765 & server=$$!; \
	$(BIN)/python -m collector & collector=$$!; \
	trap 'kill $$server $$collector 2>/dev/null' EXIT INT TERM; \
	$(BIN)/dagster job execute -m cdp_assets.definitions -j full_refresh && \
	$(BIN)/dagster dev -w workspace.yaml -h $(HOST) -p $(PORT)

# Every tier (unit, stage, dagster, e2e, spark): what CI runs. Without a JDK the Spark tests are skipped,
# except under CI, where .ci/run installs one and they must run. Two worker processes (pytest-xdist), each
# taking whole files, so a file's module fixtures are built once, costliest files first (tests/conftest.py).
test: install $(BIN)/.spark-installed
	@if command -v javac >/dev/null; then $(BIN)/python -m resources.spark.udfs; \
	else echo "javac not found: the Spark tests will be skipped (apt-get install openjdk-17-jdk-headless)"; fi
	$(BIN)/python -m pytest --numprocesses 2 --dist loadfile --no-loadscope-reorder

# The unit and stage tiers, for development: no Dagster run, no subprocess, no PostgreSQL.
test-fast: install
	$(BIN)/python -m pytest -m "unit or stage"

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python -m benchmarks.full_refresh --people 10000 100000

# Identity accuracy on FEBRL 1-4 and on the demo ground truth, with the identity stage's time and memory.
bench-identity: install
	$(BIN)/python -m benchmarks.identity

# Collector throughput and p99 latency under batched clients, then kill -9 under load: no acknowledged event lost.
bench-collector: install
	$(BIN)/python -m benchmarks.collector --seconds 60

clean-data:
	rm -rf data/landing data/exports data/warehouse.duckdb data/ground_truth.csv
