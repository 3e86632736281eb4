# Every target makes .venv with the machine's python3 when it is missing and
# installs the project into it: nothing needs installing by hand first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEPS   := $(VENV)/.deps-installed
JOBS   ?= 2

.PHONY: all install demo run test bench lint fuzz clean

all: test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip "setuptools>=68" wheel

# Third-party dependencies: reinstalled only when the declared ones change.
$(DEPS): $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install -q '.[test]'
	touch $(DEPS)

# The project itself, installed as users get it (a normal, non-editable
# install, so twistd finds twisted/plugins/vigo_plugin.py). Then the Twisted plugin
# caches (dropin.cache) of the installed twisted/plugins and vigo/plugins, built
# while the venv is writable: a server run from a read-only venv (etc/vigo.service,
# ProtectSystem=strict) cannot write them and would log so at every start.
# -I: the installed packages, not the checkout's (no current directory on sys.path).
install: $(DEPS)
	$(BIN)/pip install -q --no-deps --force-reinstall --no-build-isolation .
	@rm -rf build
	$(BIN)/python -I -c 'from twisted.plugin import IPlugin, getPlugins; \
	  import twisted.plugins, vigo.plugins; \
	  list(getPlugins(IPlugin)); list(getPlugins(IPlugin, vigo.plugins))'

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
	$(BIN)/python bench/ha.py

# Coverage-guided fuzzing (atheris, libFuzzer) of the decoders strangers reach:
# each harness of fuzz/ runs FUZZ_SECONDS on its corpus in var/fuzz/, and the
# target fails on a crash (an unexpected exception, a broken promise, a hang
# past 10 s, 2 GB), whose input is left in var/fuzz/crashes/. It fuzzes the
# working tree; atheris is the `fuzz` extra of setup.cfg. Not part of `make test`.
FUZZ_SECONDS ?= 30
FUZZ_HARNESSES := envoy_frames gossip snapshot tokens rest_body schema config replication

fuzz: $(BIN)/python
	@$(BIN)/python -c 'import twisted, nacl, yaml, treq' 2>/dev/null || $(MAKE) $(DEPS)
	@$(BIN)/python -c 'import atheris' 2>/dev/null || $(BIN)/pip install -q 'atheris>=2.3' \
	  || { echo "make fuzz: atheris could not be installed into $(VENV): it needs a wheel" \
	       "for this Python and platform, or clang with libFuzzer to build one"; exit 1; }
	@mkdir -p var/fuzz/crashes
	@failed=""; for name in $(FUZZ_HARNESSES); do \
	  mkdir -p var/fuzz/$$name; \
	  if $(BIN)/python fuzz/fuzz_$$name.py -max_total_time=$(FUZZ_SECONDS) -timeout=10 \
	      -rss_limit_mb=2048 -artifact_prefix=var/fuzz/crashes/$$name- var/fuzz/$$name \
	      >var/fuzz/$$name.log 2>&1; then \
	    echo "fuzz $$name: ok, $$(grep -o 'Done [0-9]* runs in [0-9]* second(s)' \
	      var/fuzz/$$name.log), corpus of $$(ls var/fuzz/$$name | wc -l) inputs"; \
	  else \
	    echo "fuzz $$name: FAILED (whole log: var/fuzz/$$name.log)"; \
	    grep -A 30 -e 'Uncaught Python exception' -e 'ERROR: libFuzzer' \
	      var/fuzz/$$name.log | grep -v '^0x' | head -n 40; \
	    failed="$$failed $$name"; \
	  fi; \
	done; \
	if [ -n "$$failed" ]; then \
	  echo "make fuzz: crashed:$$failed (inputs in var/fuzz/crashes/; replay one with" \
	       "$(BIN)/python fuzz/fuzz_NAME.py var/fuzz/crashes/FILE)"; exit 1; \
	fi; \
	echo "make fuzz: no crash in $(FUZZ_SECONDS) s of each of the" \
	     "$(words $(FUZZ_HARNESSES)) harnesses"

# The web pages drawn by headless Chromium (Debian's chromium), 1000 px wide, into
# docs/screenshots/: the browser test (tests/test_page_browser.py) with
# VIGO_SCREENSHOTS set; it fails rather than skips when chromium is missing.
.PHONY: screenshots
screenshots: $(DEPS)
	VIGO_SCREENSHOTS=$(CURDIR)/docs/screenshots $(BIN)/python -m twisted.trial \
	  --temp-directory=_trial_temp.screenshots tests.test_page_browser
	@rm -rf _trial_temp.screenshots

clean:
	rm -rf $(VENV) build *.egg-info _trial_temp* var
