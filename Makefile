# mittd — the two set-up commands of the README:
#   make demo   creates .venv, installs mittd, runs `mittd demo` (offline replay + live run)
#   make test   creates .venv, installs mittd with the train, dev and cluster extras (Ray for
#               `mittd fleet`), runs ruff and pytest
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
# setuptools tells every editable install, as a warning, to mind folders named like
# the package ("Editable installation."): information, not a problem; kept off the
# set-up output so that a real warning stands out.
PIP    := PYTHONWARNINGS="ignore:Editable installation:UserWarning" $(BIN)/pip
DEMO   ?= out/demo

.PHONY: demo test lint fio clean

$(VENV)/.base: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
	  || { echo "mittd needs Python >= 3.11 (found $$($(PYTHON) --version 2>&1)); set PYTHON=..."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e .
	@touch $@

$(VENV)/.plot: $(VENV)/.base
	$(PIP) install --quiet -e ".[plot]"
	@touch $@

$(VENV)/.dev: $(VENV)/.base
	$(PIP) install --quiet -e ".[train,dev,cluster]"
	@touch $@

# fio measures real IO for `mittd collect`; install it where we can (root with apt-get).
fio:
	@command -v fio >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing fio (apt-get)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fio) >/dev/null; \
	  else \
	    echo "fio is missing: install it (e.g. sudo apt-get install fio)"; exit 1; \
	  fi; }

demo: $(VENV)/.plot fio
	$(BIN)/mittd demo --output $(DEMO)

lint: $(VENV)/.dev
	$(BIN)/ruff check .

test: $(VENV)/.dev fio
	$(BIN)/ruff check .
	$(BIN)/pytest

clean:
	rm -rf $(VENV) out build *.egg-info .pytest_cache .ruff_cache .hypothesis
