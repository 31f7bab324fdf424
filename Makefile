# Two commands on a fresh clone: `make run` (the default search) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch; an unpinned torch would pull several GB of CUDA packages.
TORCH ?= torch==2.13.0

.PHONY: install run test clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

run: install
	$(PY) -m nas.search

test: install
	$(PY) -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) outputs
