# The two commands that matter: `make run` (process the samples end to end on the embedded
# default) and `make test` (the whole suite). Both set up a fresh machine first.
VENV ?= .venv
BIN := $(VENV)/bin
POD_HOME ?= $(CURDIR)/.pod
export POD_HOME

.PHONY: setup run pod test test-e2e ui serve bench bench-scale clean

setup:
	@bash scripts/setup.sh

# The sample show (samples/show.toml) for the commands a person runs; tests set their own.
run ui serve: export POD_SHOW_FILE ?= $(CURDIR)/samples/show.toml

run: setup
	$(BIN)/pod ingest samples/*.flac samples/*.mp3
	$(BIN)/pod run
	$(BIN)/pod publish --all-processed
	$(BIN)/pod feed
	$(BIN)/pod status --json > $(POD_HOME)/status.json
	@echo "status JSON: $(POD_HOME)/status.json"
	@echo "pod is in $(VENV)/bin: \`source $(VENV)/bin/activate\` puts it on PATH (or: make pod ARGS=status)"

# The pod command of the project's virtualenv, e.g. `make pod ARGS="run --episode ID"`.
pod: setup
	@$(BIN)/pod $(ARGS)

# Two workers (one per core of the reference machine); the tests of one file stay on one
# worker, so module fixtures are built once. TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2
test: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

ui: setup
	mkdir -p $(POD_HOME)/dagster
	@# the project's own Dagster home: telemetry off, so no banner (pod writes the same file);
	@# PYTHONWARNINGS: Dagster's beta warning on the sensors' `owners` it copies itself, and
	@# its note that `dagster dev` has a successor
	@test -f $(POD_HOME)/dagster/dagster.yaml || printf 'telemetry:\n  enabled: false\n' > $(POD_HOME)/dagster/dagster.yaml
	@# the store's media for browsers on http://127.0.0.1:3001 (pod serve-media), stopped with the UI
	env --default-signal=INT,TERM $(BIN)/pod serve-media & media=$$!; \
	trap 'kill $$media 2>/dev/null' EXIT INT TERM; \
	DAGSTER_HOME=$(POD_HOME)/dagster PYTHONWARNINGS='ignore:Parameter `owners`,ignore:Function `dev_command`' \
		env --default-signal=INT,TERM,QUIT \
		$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

# Production setup on this machine: webserver + daemon on the local Postgres with
# deploy/dagster.yaml (creates the databases if missing), and the media server for a local
# store; Ctrl-C stops them. Binds 127.0.0.1:3000 (media 127.0.0.1:3001);
# e.g. `make serve SERVE_ARGS="--host 0.0.0.0 --port 3100"`. See docs/operations.md.
serve: setup
	$(BIN)/python deploy/serve.py $(SERVE_ARGS)

# Only the daemon-driven end-to-end test and the browser tests, on `make serve` and on
# `make ui` (also part of `make test`).
test-e2e: setup
	$(BIN)/python -m pytest tests/pipeline/test_daemon_end_to_end.py tests/pipeline/test_ui_browser.py tests/pipeline/test_ui_embedded.py $(PYTEST_ARGS)

bench: setup
	$(BIN)/python -m bench.run

# Catalog-wide operations at 1,000 / 10,000 / 100,000 episodes on SQLite and Postgres
# (sensor tick, purge plan, pod status); writes bench/results/scale.{json,md}. docs/scale.md.
bench-scale: setup
	$(BIN)/python bench/scale.py $(SCALE_ARGS)

clean:
	rm -rf $(POD_HOME)
