# Two commands on a fresh clone: `make run` (the default search) and `make test` (the whole
# suite; `make test-fast` leaves out the tests marked slow).
VENV ?= .venv
PY := $(VENV)/bin/python
# The torch the project is tested with, installed first. It is the CPU build only where pip
# already finds that build; from the public index on Linux it is the CUDA build (README).
TORCH ?= torch==2.13.0

.PHONY: install run test test-fast clean

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

# The edit loop: every test but those marked slow (pyproject.toml), under 3 minutes on 2 cores.
test-fast: install
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow"

clean:
	rm -rf $(VENV) outputs
