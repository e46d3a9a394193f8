# smgate developer entry points. Everything installs into .venv; nothing global.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STATE ?= .smgate

.PHONY: venv run test lint typecheck pytest bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

run: venv
	$(VENV)/bin/smgate demo --state $(STATE)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy

pytest: venv
	$(PY) -m pytest -q -n 2 --dist loadgroup

test: lint typecheck pytest

bench: venv
	$(PY) bench/crypto.py
	$(PY) bench/tlcp_core.py
	$(PY) bench/tlcp.py
	$(PY) bench/tls13.py
	$(PY) bench/audit.py
	$(PY) bench/gateway.py
	$(PY) bench/proxy.py
	$(PY) bench/codec.py

clean:
	rm -rf $(VENV) $(STATE) build *.egg-info
