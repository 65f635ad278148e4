# rawgate — two commands on a fresh machine:
#   make demo   creates .venv, installs rawgate, calibrates the simulated microscope
#   make test   installs what the tests need and runs them
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)

.PHONY: demo test bench bench-codecs install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,pycromanager]"
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/rawgate demo --out demo-output

test: $(STAMP)
	$(PY) -m pytest -q

bench: bench-codecs
	$(PY) bench/bench_calibration.py

# every codec and the peers on the same frames; fetches the stardist wheel (its sample nuclei
# images) into bench/data once, without installing it
bench-codecs: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) bench/bench_codecs.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache
