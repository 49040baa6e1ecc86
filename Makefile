# The two commands that matter: `make run` (process the samples end to end on the embedded
# default) and `make test` (the whole suite). Both set up a fresh machine first.
VENV ?= .venv
BIN := $(VENV)/bin
POD_HOME ?= $(CURDIR)/.pod
export POD_HOME

.PHONY: setup run test test-e2e ui serve bench clean

setup:
	@bash scripts/setup.sh

run: setup
	$(BIN)/pod ingest samples/*.flac samples/*.mp3
	$(BIN)/pod run
	$(BIN)/pod status --json > $(POD_HOME)/status.json
	@echo "status JSON: $(POD_HOME)/status.json"

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

ui: setup
	mkdir -p $(POD_HOME)/dagster
	DAGSTER_HOME=$(POD_HOME)/dagster env --default-signal=INT,TERM,QUIT \
		$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

# Production setup on this machine: webserver + daemon on the local Postgres with
# deploy/dagster.yaml (creates the databases if missing); Ctrl-C stops both. Binds 127.0.0.1:3000;
# e.g. `make serve SERVE_ARGS="--host 0.0.0.0 --port 3001"`. See docs/operations.md.
serve: setup
	$(BIN)/python deploy/serve.py $(SERVE_ARGS)

# Only the daemon-driven end-to-end test and the browser test (also part of `make test`).
test-e2e: setup
	$(BIN)/python -m pytest tests/test_daemon_end_to_end.py tests/test_ui_browser.py $(PYTEST_ARGS)

bench: setup
	$(BIN)/python -m bench.run

clean:
	rm -rf $(POD_HOME)
