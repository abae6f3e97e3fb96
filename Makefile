# make demo: run the demonstration; make test: run the whole test suite.
# Each sets up its own virtualenv in .venv on a machine that has only python3.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
BROWSER_STAMP := $(VENV)/.installed-browser

.PHONY: demo test test-browser test-multihost test-multihost-run lint bench clean \
	crashcheck crashcheck-sample

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,cron]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

# The multi-host suite runs after it (test-multihost), as .ci/run does, and so do the
# dashboard's browser tests (test-browser).
test: $(STAMP)
	$(BIN)/python -m pytest -q -m 'not multihost and not browser'

# Power loss, enumerated (docs/durability.md): every state a crash can leave after each
# queue operation, under two persistence models, checked by fsck, repair and a drain.
# Each ends with one line "N states checked, M violations" and fails when M > 0.
# The sample (fixed seed, at most 24 states per crash point) takes well under 2 minutes.
crashcheck-sample: $(STAMP)
	PYTHONPATH=src:tests $(BIN)/python -m crashcheck --sample --seed 25

crashcheck: $(STAMP)
	PYTHONPATH=src:tests $(BIN)/python -m crashcheck --seed 25

# Playwright for the browser tests; the browser is the system's Chromium (Debian:
# apt-get install chromium), never one Playwright downloads.
$(BROWSER_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[browser]'
	touch $(BROWSER_STAMP)

# dq web in a real headless Chromium (each test says why it skips where there is none).
test-browser: $(BROWSER_STAMP)
	$(BIN)/python -m pytest -q -m browser

# The multi-host tests on real GlusterFS and NFSv3, three hosts (needs root: network namespaces;
# installs Debian packages). tests/multihost/teardown.sh takes the test bed down.
MULTIHOST ?= tests/multihost
test-multihost: $(STAMP)
	FSP_HOSTS=3 $(MULTIHOST)/setup-gluster.sh
	FSP_HOSTS=3 FSP_NFS_ATTR_TIMEOUT=3 $(MULTIHOST)/setup-nfs-ganesha.sh
	$(MAKE) test-multihost-run

# The multi-host tests alone, on a test bed that is already up (.ci/run brings it up).
test-multihost-run: $(STAMP)
	$(BIN)/python -m pytest -q -m multihost

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/mypy

# The peers of bench/peers.py, installed only for the benchmark (make test never needs them).
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $(BENCH_STAMP)

# dirqueue side by side with its peers, on disk and on tmpfs: the runs of docs/performance.md,
# a few minutes each on 2 idle CPUs. The full run (100,000 deep, 20,000 jobs for 2+2) is
# bench/peers.py with its own defaults.
BENCH_ARGS ?= --sizes 1000,10000 --perl-max-depth 1000 --jobs 5000 --many-jobs 10000 \
	--samples 100 --server-jobs 3000 --contention-jobs 3000
bench: $(BENCH_STAMP)
	$(BIN)/python bench/peers.py $(BENCH_ARGS)
	$(BIN)/python bench/peers.py --dir /dev/shm $(BENCH_ARGS)
	$(BIN)/python bench/peers.py --dir /dev/shm --only dirqueue,perl,bare \
		--workload enqueue,drain,many --sizes 1000 --jobs 2000 --many-jobs 2000

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .mypy_cache
