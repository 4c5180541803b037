# Imaging Hub: `make run` starts the hub on its embedded default; `make test` runs every test.
# Both install what they need first (Debian packages with apt-get, Python packages in .venv).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEBIAN_TEST_PACKAGES := dcmtk orthanc orthanc-dicomweb gcc libc6-dev

.PHONY: run test install install-test debian-run debian-test lint format bench clean

run: install debian-run
	$(BIN)/imaging-hub serve

test: install-test debian-test lint
	$(BIN)/pytest -q --durations=15

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11 or newer is needed"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

install-test: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'

# dcmtk gives `storescu` for sending a first study; tests also use Orthanc as a DICOM peer, and a
# C compiler for the shim that keeps peers without a listen-address option on 127.0.0.1.
debian-run:
	@command -v storescu >/dev/null || \
		($(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dcmtk)

debian-test:
	@command -v storescu >/dev/null && command -v Orthanc >/dev/null && command -v cc >/dev/null && \
		[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || \
		($(SUDO) apt-get update -qq && \
		 $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBIAN_TEST_PACKAGES))

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict imaging_hub

format:
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
