# The few commands a person types. Everything installs itself into .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SIZE ?= small
SEED ?= 42
DAYS ?= 60
# The simulated calendar ends yesterday (UTC): START is DAYS days ago, unless given (START=2026-09-01).
START ?= $(shell $(PYTHON) -c 'import datetime as d; print(d.datetime.now(d.timezone.utc).date() - d.timedelta(days=$(DAYS)))')
# AUTOMATIONS=on make demo: the schedules and sensors are left running afterwards.
AUTOMATIONS ?= off
PORT ?= 3000
MLFLOW_PORT ?= 5000

# Run state lives in the project's data folder (or LAKEHOUSE_DATA_DIR); nothing under ~.
export LAKEHOUSE_DATA_DIR ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(LAKEHOUSE_DATA_DIR)/dagster_home
# Telemetry of every tool off.
export DBT_SEND_ANONYMOUS_USAGE_STATS := false
export DO_NOT_TRACK := 1
export GX_ANALYTICS_ENABLED := false
export RAY_USAGE_STATS_ENABLED := 0
export MLFLOW_DISABLE_TELEMETRY := true
export DAGSTER_DISABLE_TELEMETRY := true
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false

.PHONY: byod byod-ui movielens help install demo test test-fast test-extra ui mlflow train search bench bench-train bench-infer bench-retrieval bench-scale ablations bench-embeddings simulate report dbt-parse clean serve preview chromium bench-serve fault-drill

help:
	@echo "make demo   - install, simulate $(DAYS) days up to yesterday ($(SIZE)), materialize every asset, print a summary"
	@echo "              (AUTOMATIONS=on: leave the schedules and sensors running; START=YYYY-MM-DD: another calendar)"
	@echo "make test   - install and run the test suite"
	@echo "make test-extra - the tests too slow for make test: a two-node Ray cluster, a 270 MB import in bounded memory"
	@echo "make ui     - open the Dagster UI on the same data (http://127.0.0.1:$(PORT))"
	@echo "make mlflow - open the MLflow UI on the same store (http://127.0.0.1:$(MLFLOW_PORT))"
	@echo "make train  - train, evaluate and promote the model on the current gold tables"
	@echo "make search - a Ray Tune search of model configs on validation days, one MLflow parent run"
	@echo "make bench  - lakehouse benchmark; make bench-train - training benchmark (JSON under benchmarks/results/)"
	@echo "make ablations - what a feature or model form adds: variants of one config on the same held-out lists"
	@echo "make bench-embeddings - whether the shared user embeddings help the DLRM, on the same held-out lists"
	@echo "make report - the simulator's realism report on the landing zone"
	@echo "make serve  - the home-feed read service on the published cache; make bench-serve - its latency benchmark"
	@echo "make preview - a user's home screen as the app shows it, beside their history and true taste (http://127.0.0.1:8001)"
	@echo "make fault-drill - every fault-injection test REPEAT times: survivals, rows lost, time to recover"
	@echo "make byod   - your own data through the same flow: MAPPING=your.yaml (default: a generated example)"
	@echo "make byod-ui - the Dagster UI on the byod data"
	@echo "make movielens - MovieLens-100K (real ratings, read from the installed recbole wheel) through the byod flow"

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# pip byte-compiles one file at a time; compileall below does it on every core. Compiled here
	# because Python may not write its caches later (PYTHONDONTWRITEBYTECODE): uncompiled, every
	# process would compile what it imports again. Some packages ship files that never compile
	# (templates): compileall's exit code is ignored, as pip ignores them. The packages' own test
	# folders are never imported: left out (14% of the files, 48 -> 38 s on 2 cores).
	$(BIN)/python -m pip install -q --no-compile -e '.[ml,dev]'
	# torchrec's metadata requires the CUDA fbgemm-gpu; the CPU build comes from [ml].
	$(BIN)/python -m pip install -q --no-compile --no-deps torchrec==1.8.0
	-$(BIN)/python -m compileall -q -j 0 -x '/tests/' $(VENV)/lib > /dev/null 2>&1
	touch $@

$(DAGSTER_HOME)/dagster.yaml: orchestration/dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp orchestration/dagster.yaml $@

dbt-parse: install
	cd dbt_project && ../$(BIN)/dbt parse --quiet

simulate: install
	$(BIN)/python -m simulator generate --size $(SIZE) --seed $(SEED) --days $(DAYS) --start-date $(START) \
		--landing "$${LANDING_URI:-$${LAKEHOUSE_URI:-$(LAKEHOUSE_DATA_DIR)/lakehouse}/landing}"

report: install
	$(BIN)/python -m simulator report --landing "$${LANDING_URI:-$${LAKEHOUSE_URI:-$(LAKEHOUSE_DATA_DIR)/lakehouse}/landing}"

demo: install $(DAGSTER_HOME)/dagster.yaml simulate dbt-parse
	$(BIN)/python -m orchestration.demo --start $(START) --days $(DAYS) $(if $(filter on,$(AUTOMATIONS)),--automations-on)

# TEST_WORKERS: pytest-xdist workers (tests sharing a built lakehouse stay on one; 0: one process)
TEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder)

test: install
	$(BIN)/python -m pytest -q $(XDIST)

test-fast: install
	$(BIN)/python -m pytest -q $(XDIST) -m "not slow"

test-extra: install chromium
	RUN_EXTRA_TESTS=1 $(BIN)/python -m pytest -q -m extra

# the preview's browser test needs Debian's Chromium: installed when missing (root, apt)
chromium:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then apt-get install -y chromium chromium-driver; \
	else echo "make chromium: no apt-get (or not root): the preview's browser test will be skipped; install chromium and chromium-driver"; fi

ui: install $(DAGSTER_HOME)/dagster.yaml dbt-parse
	$(BIN)/python -m orchestration.ui -w workspace.yaml -h 127.0.0.1 -p $(PORT)

# MLflow's UI on the store the assets write (MLFLOW_TRACKING_URI, else SQLite in the data folder).
mlflow: install
	mkdir -p $(LAKEHOUSE_DATA_DIR)/mlflow
	$(BIN)/mlflow ui --host 127.0.0.1 --port $(MLFLOW_PORT) --workers 1 \
		--backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///$(abspath $(LAKEHOUSE_DATA_DIR))/mlflow/mlflow.db}" \
		--default-artifact-root "$(abspath $(LAKEHOUSE_DATA_DIR))/mlflow/artifacts"

train: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m orchestration.demo --model-only $(MODEL_ARG)

# SEARCH_ARGS: more options of `python -m ml.search`, e.g. SEARCH_ARGS='--samples 16'
search: install
	$(BIN)/python -m ml.search $(SEARCH_ARGS) --lakehouse "$${LAKEHOUSE_URI:-$(LAKEHOUSE_DATA_DIR)/lakehouse}" \
		--data-dir "$(LAKEHOUSE_DATA_DIR)"

bench-train: install
	$(BIN)/python -m benchmarks.train_bench --lakehouse "$${LAKEHOUSE_URI:-$(LAKEHOUSE_DATA_DIR)/lakehouse}"

bench: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m benchmarks.lakehouse_bench --size $(SIZE) $(BENCH_ARGS)

# The home-feed read service on the published cache (HOMEFEED_CACHE_DIR, else the data folder's cache/).
serve: install
	$(BIN)/python -m homefeed.service --cache "$${HOMEFEED_CACHE_DIR:-$(LAKEHOUSE_DATA_DIR)/cache}" --port $${SERVE_PORT:-8000}

# the home-screen preview for reviewers: http://127.0.0.1:8001/?user=ID (read-only, loopback)
preview: install
	$(BIN)/python -m ml.preview --port $${PREVIEW_PORT:-8001} $(PREVIEW_ARGS)

bench-serve: install
	$(BIN)/python -m benchmarks.serve_bench

clean:
	rm -rf $(LAKEHOUSE_DATA_DIR) dbt_project/target dbt_project/logs

# Batch-inference throughput against a naive per-user loop of the same champion (make demo first).
bench-infer: install
	$(BIN)/python -m benchmarks.inference_bench

# Retrieve then rank vs exhaustive ranking on the same users and lists (make demo first).
bench-retrieval: install
	$(BIN)/python -m benchmarks.retrieval_bench --lakehouse "$${LAKEHOUSE_URI:-$(LAKEHOUSE_DATA_DIR)/lakehouse}" $(BENCH_ARGS)

# The whole pipeline at one simulator size (SCALE_SIZE: tiny, small, medium, large), in a scratch
# folder: simulate, backfill SCALE_DAYS days, train, one daily chain; wall time and peak memory.
SCALE_SIZE ?= medium
SCALE_DAYS ?= 28
bench-scale: install
	$(BIN)/python -m benchmarks.scale_bench --size $(SCALE_SIZE) --days $(SCALE_DAYS) $(SCALE_ARGS)

# What a feature or model form adds, on the same held-out lists with intervals (make demo or
# make byod first; for a byod run, set LAKEHOUSE_MAPPING and the lakehouse as `make byod` does).
# BASE / VARIANTS: JSON of ModelTrainingConfig knobs, e.g. VARIANTS='{"no_ids": {"include_ids": false}}'
ablations: install
	$(BIN)/python -m benchmarks.ablations --lakehouse "$${LAKEHOUSE_URI:-$(LAKEHOUSE_DATA_DIR)/lakehouse}" \
		$(if $(BASE),--base '$(BASE)') $(if $(VARIANTS),--variants '$(VARIANTS)') $(BENCH_ARGS)

# whether the shared user embeddings help the DLRM: a tower trained before the DLRM's window,
# its vectors as features, the same held-out lists (benchmarks/user_embedding_bench.py)
bench-embeddings: install
	$(BIN)/python -m benchmarks.user_embedding_bench --lakehouse "$(LAKEHOUSE_DATA_DIR)/lakehouse" \
		$(if $(BASE),--base '$(BASE)') $(BENCH_ARGS)

REPEAT ?= 3
fault-drill: install
	$(BIN)/python -m benchmarks.fault_drill --repeat $(REPEAT)

# Bring your own data: the same flow on any interaction log described by a mapping file.
# Default: examples/listening/mapping.yaml on a generated listening log (a shape unlike the
# simulator's). Its run state lives apart from the demo's, in BYOD_DIR (one folder per mapping).
MAPPING ?= examples/listening/mapping.yaml
BYOD_DIR ?= $(CURDIR)/data/byod/$(subst /,_,$(basename $(MAPPING)))
BYOD_URI ?=
BYOD_ENV = LAKEHOUSE_MAPPING="$(abspath $(MAPPING))" LAKEHOUSE_DATA_DIR="$(BYOD_DIR)" \
	DAGSTER_HOME="$(BYOD_DIR)/dagster_home" LAKEHOUSE_URI="$(BYOD_URI)" LANDING_URI= LAKEHOUSE_DUCKDB_PATH=
BYOD_DAYS ?= 42
# the generated listening log's first day (its mapping's default first_day)
BYOD_START ?= 2026-09-01
# JSON overrides of ModelTrainingConfig, e.g. MODEL_CONFIG='{"train_days": 90, "valid_days": 7}'
MODEL_CONFIG ?=
MODEL_ARG = $(if $(MODEL_CONFIG),--model-config '$(MODEL_CONFIG)')

byod: install
	mkdir -p "$(BYOD_DIR)/dagster_home" && cp orchestration/dagster.yaml "$(BYOD_DIR)/dagster_home/dagster.yaml"
	@case "$(MAPPING)" in examples/listening/*) \
		$(BIN)/python -m simulator external --out "$(BYOD_DIR)/listening_source" --days $(BYOD_DAYS) \
			--start-date $(BYOD_START) --seed $(SEED) --ratings;; esac
	$(BYOD_ENV) $(BIN)/python -m orchestration.demo --from-source $(MODEL_ARG)

byod-ui: install
	mkdir -p "$(BYOD_DIR)/dagster_home" && cp orchestration/dagster.yaml "$(BYOD_DIR)/dagster_home/dagster.yaml"
	$(BYOD_ENV) $(BIN)/python -m orchestration.ui -w workspace.yaml -h 127.0.0.1 -p $(PORT)

# MovieLens-100K, read from the installed recbole wheel (it ships the files; never copied here).
movielens: install
	$(BIN)/python -m pip install -q --no-deps recbole==1.2.1
	MOVIELENS_DIR="$$($(BIN)/python -c 'import importlib.util, os; print(os.path.join(os.path.dirname(importlib.util.find_spec("recbole").origin), "dataset_example", "ml-100k"))')" \
		$(MAKE) byod MAPPING=examples/movielens/mapping.yaml \
		MODEL_CONFIG='{"train_days": 180}'  # every earlier day; the held-out days: the mapping's holdout_lists
