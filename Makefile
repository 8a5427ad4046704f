# One command each: `make demo` installs and runs the pipeline on params/demo.yaml; `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install demo test browser colab clean-venv

install: $(VENV)/.installed web/node_modules/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip check
	$(PY) -c "import tensorflow, tensorflowjs, keras; print('tensorflow', tensorflow.__version__, '| keras', keras.__version__, '| tensorflowjs', tensorflowjs.__version__)"
	touch $@

web/node_modules/.installed: web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund
	touch $@

# Headless Chromium runs the TF.js parity checks and the web page tests (Debian's package).
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; \
	  else echo "Chromium is needed for the browser tests: sudo apt-get install chromium"; exit 1; fi; }

demo: install
	$(PY) -m lib run params/demo.yaml

test: install browser
	$(PY) -m pytest

# The Colab route in a fresh venv with Colab's package versions (.venv-colab; a few minutes, downloads ~1 GB).
colab: install browser
	bash .ci/colab

clean-venv:
	rm -rf $(VENV) .venv-colab web/node_modules
