# Two commands on a fresh machine: `make demo` and `make test`. Everything else is a step of those.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Optional extras to install with the package. CI adds `torch` (about 5 GB with its CUDA wheels,
# ~1 min from PyPI) so the PyTorch dataset test runs too: `make test EXTRAS=jobs,test,dev,torch`.
EXTRAS ?= jobs,test,dev
STAMP  := $(VENV)/.installed-$(EXTRAS)
PYTEST_ARGS ?=

.PHONY: install jars test lint unit demo bench bench-bulk bench-scaleout docker-engine docker-engine-stop test-docker clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required (found %s)" % sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[$(EXTRAS)]'
	@touch $(STAMP)

install: $(STAMP)                     ## virtualenv + the package and its test tools

jars: install                         ## HBase jars from Maven Central into ~/.cache/seqstore (reused)
	$(BIN)/seqstore hbase fetch

lint: install                         ## ruff + mypy, both must be clean
	$(BIN)/ruff check .
	$(BIN)/mypy

test: jars lint                       ## the whole suite, integration tests on a real HBase
	$(BIN)/python -m pytest $(PYTEST_ARGS)

unit: install                         ## the tests that need no server
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

# The suite's Docker subset: store round trips, a Ray backfill + verify, score, export, the README
# example and data surviving a container restart, against the image docker/ builds.
DOCKER_TESTS ?= tests/integration/test_docker_runtime.py \
	tests/integration/test_hbase_runtime.py::test_data_survives_stop_and_start \
	tests/integration/test_store_sequences.py tests/integration/test_backfill.py \
	tests/integration/test_score_export.py tests/integration/test_readme_example.py

docker-engine:                        ## own dockerd (installed from Debian if missing), base + runtime images
	bash docker/engine.sh start

docker-engine-stop:                   ## stop that dockerd and its containers
	bash docker/engine.sh stop

test-docker: install                  ## the Docker subset, pytest --hbase=docker; the engine is stopped after
	bash docker/engine.sh start
	DOCKER_HOST=$$(bash docker/engine.sh host) SEQSTORE_COMPOSE_FILES=docker/compose.yml:docker/compose.ci.yml \
	  $(BIN)/python -m pytest --hbase=docker $(DOCKER_TESTS) $(PYTEST_ARGS); \
	  status=$$?; bash docker/engine.sh stop; exit $$status

demo: jars                            ## the main job on the embedded HBase
	$(BIN)/seqstore demo

bench: jars                           ## ratios vs HBase PE, plain happybase and Feast-style reads -> benchmarks/results/
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/seqstore hbase start
	$(BIN)/python -m benchmarks.run_all

bench-bulk: jars                      ## issue 22: bulk backfill into chunks vs plain puts and backfill+compact; chunk format 3 vs 2 -> benchmarks/results/
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/seqstore hbase start
	$(BIN)/python -m benchmarks.bulk_bench
	$(BIN)/python -m benchmarks.chunk_format

bench-scaleout: jars                  ## 1 vs 3 RegionServers x 1 vs 2 Ray nodes (its own HBase instances) -> benchmarks/results/
	$(BIN)/python -m benchmarks.scaleout_bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
