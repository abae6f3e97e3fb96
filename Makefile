# make demo: run the demonstration; make test: run the whole test suite.
# Each sets up its own virtualenv in .venv on a machine that has only python3.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-multihost lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The multi-host tests on real GlusterFS and NFSv3, three hosts (needs root: network namespaces;
# installs Debian packages). tests/multihost/teardown.sh takes the test bed down.
MULTIHOST ?= tests/multihost
test-multihost: $(STAMP)
	FSP_HOSTS=3 $(MULTIHOST)/setup-gluster.sh
	FSP_HOSTS=3 FSP_NFS_ATTR_TIMEOUT=3 $(MULTIHOST)/setup-nfs-ganesha.sh
	$(BIN)/python -m pytest -q tests/test_multihost.py tests/test_multihost_hosts.py

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/pickup_scale.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .mypy_cache
