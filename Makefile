# The two commands of the README: `make demo` and `make test`. Each does its own
# set-up on a fresh machine: the virtual environment, dependencies, the local
# cluster binary (built from Kubernetes' Go modules, cached afterwards).

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# Go is often installed outside PATH (e.g. /usr/local/go); look there too.
export PATH := $(PATH):/usr/local/go/bin:$(HOME)/go/bin
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: demo test test-go test-python test-deps localcluster bytecode clean

demo: localcluster bytecode
	$(BIN)/gitops demo

test: test-go test-python

test-go:
	cd localcluster && CGO_ENABLED=0 go test ./fakekubelet/

test-python: localcluster test-deps bytecode
	$(BIN)/pytest

# git daemon/http-backend, sshd and gpg for the Git remotes of the tests (Debian
# packages, needs root), and helm, sops and age-keygen built with Go into ~/go/bin.
test-deps:
	bash scripts/install-test-deps.sh
	bash scripts/install-helm.sh
	bash scripts/install-sops.sh

localcluster: $(INSTALLED)
	$(BIN)/gitops localcluster build

# Our modules' bytecode, as pip writes it for an installed package. An editable
# install leaves it to the first import, and where PYTHONDONTWRITEBYTECODE is set
# every gitops command would compile them from source again (0.15 s a command).
# A module edited later is compiled from source until this runs again.
bytecode: $(INSTALLED)
	$(BIN)/python -m compileall -q blocks cli engine flows localcluster tasks

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache
