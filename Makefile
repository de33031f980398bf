# The README's commands. Everything installs into .venv/ from constraints.txt (exact pins).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# tf.Transform and TFMA 1.16 need Keras 2 (tf-keras) in every process.
export TF_USE_LEGACY_KERAS := 1

.PHONY: demo test bench bench-scale install chromium clean

# Every optional part (setup.py's extras) that the tests exercise.
EXTRAS := app,export,vertex,test,bench

install: $(VENV)/.installed

# tfx 1.16.0 declares Requires-Python <3.11 although its whole stack ships and supports 3.11
# wheels, hence --ignore-requires-python (see Environment notes in the README).
$(VENV)/.installed: setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip==24.3.1"
	$(BIN)/pip install --quiet --ignore-requires-python -c constraints.txt -e ".[$(EXTRAS)]"
	touch $@

# app/browser_test.py drives Debian's chromium (Playwright downloads no browser). Installed
# here when this is a Debian machine and we are root (as in CI); otherwise one line says how.
CHROMIUM := /usr/bin/chromium
chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing Debian's chromium for the browser test (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else \
	    echo "make test needs Debian's chromium ($(CHROMIUM)) for app/browser_test.py: run 'sudo apt-get install -y chromium' first" >&2; \
	    exit 1; \
	  fi; \
	fi

demo: install
	$(BIN)/cxr run --data-dir data/sample --output-dir outputs

test: chromium install
	$(BIN)/python -m pytest

# Pipeline vs plain Keras, throughput, serving, memory: bench/results/latest.json and
# docs/benchmarks.md. Settings: make bench BENCH_ARGS="--model mobilenet_v2 --epochs 5".
bench: install
	$(BIN)/python -m bench $(BENCH_ARGS)

# Time and memory of each component against the number of images (N distinct augmented
# variants of ../shared/data/cxr4): bench/results/scale.json, docs/scale.png and the Scale
# section of docs/benchmarks.md. Add a size: make bench-scale SCALE_ARGS="--sizes 50k".
SCALE_ARGS ?= --sizes 2k,10k,20k
bench-scale: install
	nice -n 10 $(BIN)/python -m bench.scale $(SCALE_ARGS)

clean:
	rm -rf outputs
