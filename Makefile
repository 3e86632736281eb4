# Every target makes .venv with the machine's python3 when it is missing and
# installs the project into it: nothing needs installing by hand first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEPS   := $(VENV)/.deps-installed
JOBS   ?= 2

.PHONY: all install demo run test bench lint clean

all: test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip "setuptools>=68" wheel

# Third-party dependencies: reinstalled only when the declared ones change.
$(DEPS): $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install -q '.[test]'
	touch $(DEPS)

# The project itself, installed as users get it (a normal, non-editable
# install, so twistd finds twisted/plugins/vigo_plugin.py).
install: $(DEPS)
	$(BIN)/pip install -q --no-deps --force-reinstall --no-build-isolation .
	@rm -rf build

test: install
	$(BIN)/python scripts/trial_summary.py --jobs $(JOBS) tests

# ruff (style, imports) and the import contracts of pyproject.toml.
lint: $(DEPS)
	$(BIN)/pip install -q '.[lint]'
	$(BIN)/ruff check vigo tests bench scripts twisted
	$(BIN)/lint-imports --no-cache

run: install
	mkdir -p var
	$(BIN)/twistd -n --pidfile= vigo --data-dir var/vigo

demo: install
	$(BIN)/python scripts/demo.py

bench: install
	$(BIN)/python bench/checkin.py
	$(BIN)/python bench/federation.py all
	$(BIN)/python bench/drain.py
	$(BIN)/python bench/scale.py

clean:
	rm -rf $(VENV) build *.egg-info _trial_temp* var
