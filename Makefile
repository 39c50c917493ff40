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

.PHONY: demo test test-go test-python test-deps localcluster clean

demo: localcluster
	$(BIN)/gitops demo

test: test-go test-python

test-go:
	cd localcluster && CGO_ENABLED=0 go test ./fakekubelet/

test-python: localcluster test-deps
	$(BIN)/pytest

# git daemon/http-backend, sshd and gpg for the Git remotes of the tests (Debian
# packages, needs root), and helm, sops and age-keygen built with Go into ~/go/bin.
test-deps:
	bash scripts/install-test-deps.sh
	bash scripts/install-helm.sh
	bash scripts/install-sops.sh

localcluster: $(INSTALLED)
	$(BIN)/gitops localcluster build

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache
