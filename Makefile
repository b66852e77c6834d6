# Two commands do all set-up on a fresh machine:
#   make demo   napari with the plugin docked on the 3D phantom (headless: screenshot + report)
#   make test   the whole test suite, the GUI part under a real X server (Xvfb + Mesa), with
#               the newest napari (.venv) and again with the oldest we support (.venv-oldest)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
CORE_VENV := .venv-core
OLDEST_VENV := .venv-oldest
# The oldest napari we support (pyproject.toml: the all extra's napari[pyqt6]>=0.5.0):
# the GUI tests (Plugins menu, reader, writer, samples, widgets, demo) run on it too.
NAPARI_OLDEST := 0.5.0
DEMO_OUT ?= demo-output
# The CPU build of torch where no NVIDIA GPU is present; the default (CUDA) build otherwise.
# Override, e.g.: make test TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= $(if $(shell command -v nvidia-smi 2>/dev/null),torch>=2.4,torch==2.13.0)
XVFB := xvfb-run -a -s "-screen 0 1920x1200x24 +extension GLX +render -noreset"
# System packages napari needs to draw on a virtual X display (Debian names).
SYSTEM_PACKAGES := xvfb xauth libgl1-mesa-dri libegl1 libxkbcommon-x11-0 libxcb-icccm4 \
	libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 \
	libxcb-xinput0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 libdbus-1-3 libfontconfig1

.PHONY: demo test test-core test-gui test-oldest lint-imports system-deps venv core-venv oldest-venv \
	benchmarks clean

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(VENV)/bin/python -m pip install -q -e ".[all,test]"
	touch $@

# A second environment with no Qt binding and no napari: the core must work there.
$(CORE_VENV)/.installed: pyproject.toml
	test -x $(CORE_VENV)/bin/python || $(PYTHON) -m venv $(CORE_VENV)
	$(CORE_VENV)/bin/python -m pip install -q --upgrade pip
	$(CORE_VENV)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(CORE_VENV)/bin/python -m pip install -q -e ".[test-core]"
	touch $@

# A third environment: everything as in .venv but the oldest napari we support.
$(OLDEST_VENV)/.installed: pyproject.toml
	test -x $(OLDEST_VENV)/bin/python || $(PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python -m pip install -q --upgrade pip
	$(OLDEST_VENV)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(OLDEST_VENV)/bin/python -m pip install -q -e ".[all,test]" "napari[pyqt6]==$(NAPARI_OLDEST)"
	touch $@

venv: $(VENV)/.installed
core-venv: $(CORE_VENV)/.installed
oldest-venv: $(OLDEST_VENV)/.installed

system-deps:
	@if ! command -v xvfb-run >/dev/null || ! ldconfig -p | grep -q libxkbcommon-x11; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null; \
		else \
			echo "Please install: $(SYSTEM_PACKAGES)"; exit 1; \
		fi; \
	fi

lint-imports: venv
	$(VENV)/bin/lint-imports

test-core: core-venv
	$(CORE_VENV)/bin/python -m pytest tests/core

test-gui: venv system-deps
	LIBGL_ALWAYS_SOFTWARE=1 $(XVFB) $(VENV)/bin/python -m pytest tests/widgets tests/cli

# The GUI tests again on the oldest supported napari (the CLI does not depend on napari).
test-oldest: oldest-venv system-deps
	$(OLDEST_VENV)/bin/python -c "import napari; assert napari.__version__ == '$(NAPARI_OLDEST)', napari.__version__"
	LIBGL_ALWAYS_SOFTWARE=1 $(XVFB) $(OLDEST_VENV)/bin/python -m pytest tests/widgets

test: lint-imports test-core test-gui test-oldest

demo: venv system-deps
	@if [ -n "$$DISPLAY" ]; then \
		$(VENV)/bin/python -m napari_medml._demo --out $(DEMO_OUT); \
	else \
		LIBGL_ALWAYS_SOFTWARE=1 $(XVFB) $(VENV)/bin/python -m napari_medml._demo --out $(DEMO_OUT) --headless; \
	fi

# bench_event_loop.py opens napari: a virtual display where there is none.
benchmarks: venv system-deps
	for script in benchmarks/bench_*.py; do \
		if [ -n "$$DISPLAY" ]; then $(VENV)/bin/python $$script; \
		else LIBGL_ALWAYS_SOFTWARE=1 $(XVFB) $(VENV)/bin/python $$script; fi || exit 1; \
	done

clean:
	rm -rf $(VENV) $(CORE_VENV) $(OLDEST_VENV) $(DEMO_OUT) build dist
