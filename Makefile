# rawgate — two commands on a fresh machine:
#   make demo   creates .venv, installs rawgate, calibrates the simulated microscope
#   make test   installs what the tests need and runs them
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)
# the learned-codec extra (torch ≈ 5.5 GB, about a minute from local disk): tests need it, the demo not
LEARNED := $(VENV)/.learned-$(shell cksum < pyproject.toml | cut -d' ' -f1)
TORCH  := torch==2.14.1 torchvision==0.29.1
# Debian's chromium: the tests open the HTML reports in it, headless (root, or sudo)
CHROMIUM := /usr/bin/chromium
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test bench bench-codecs bench-gate bench-daemon bench-archive bench-evaluate bench-learned bench-mda install install-learned clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,pycromanager]"
	rm -f $(VENV)/.installed-*
	touch $@

$(LEARNED): $(STAMP)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[learned]" $(TORCH)
	$(PY) -m pip install --quiet --no-deps compressai==1.2.8
	rm -f $(VENV)/.learned-*
	touch $@

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null

install: $(STAMP)

install-learned: $(LEARNED)

demo: $(STAMP)
	$(VENV)/bin/rawgate demo --out demo-output

test: $(STAMP) $(LEARNED) $(CHROMIUM)
	$(PY) -m pytest -q

bench: bench-codecs bench-gate bench-daemon bench-archive bench-evaluate bench-learned bench-mda
	$(PY) bench/bench_calibration.py

# rawgate evaluate on the benchmark scenes (recommendation beside Jetraw's published ratio and
# anscombe-transform measured on the same frames) and the time of a full 2048² evaluation
bench-evaluate: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	mkdir -p bench/results
	$(PY) bench/evaluate.py | tee bench/results/evaluate.txt

# the six learned architectures (trained here on CPU, ≈ 30 min) beside noisecal and JPEG 2000 at
# the same ratio, with the ε verdict; the study's intensity mapping against the frame's range
bench-learned: $(LEARNED)
	mkdir -p bench/results
	$(PY) bench/learned.py | tee bench/results/learned.txt

# the MDA writer (frames coded as the real DemoCamera delivers them) against the camera's own rate
bench-mda: $(STAMP)
	mkdir -p bench/results
	$(PY) bench/mda_writer.py --size 2048 --frames 40 | tee bench/results/mda_writer.txt
	$(PY) bench/mda_writer.py --size 512 --frames 200 | tee -a bench/results/mda_writer.txt

# archive size vs the bare codec: the model embedded in each copy vs stored once per archive
bench-archive: $(STAMP)
	mkdir -p bench/results
	$(PY) bench/archive_ratio.py | tee bench/results/archive_ratio.txt

# ε gate: verdict pass rates on the benchmark scenes (≈ 30 min), one 2048² spot check's time/memory, and
# the replicas' spread against 200 true repeated acquisitions per scene (gate_truth)
bench-gate: $(STAMP)
	$(PY) bench/gate_validity.py --size 256 | tee bench/results/gate_validity.txt
	$(PY) bench/gate.py | tee bench/results/gate.txt
	$(PY) bench/gate_truth.py | tee bench/results/gate_truth.txt

# the whole daemon (a real `rawgate run`, noisecal, 6 items of 16 × 2048² frames) vs the bare codec:
# sustained MB/s, complete → archived latency, per-step times (≈ 10 min on 2 cores); writes
# bench/results/daemon.txt itself
bench-daemon: $(STAMP)
	$(PY) bench/daemon.py

# every codec and the peers on the same frames; fetches the stardist wheel (its sample nuclei
# images) into bench/data once, without installing it
bench-codecs: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) bench/bench_codecs.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache
