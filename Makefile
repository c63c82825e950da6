# avmigrate: the two commands are `make demo` and `make test` (as root on Debian 12).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
LAB ?= demo
HOSTS ?= 12
STATE ?= demo/avmigrate.db
LAB_ROOT ?= /var/lib/avmigrate/labs
DEB_PACKAGES := debootstrap systemd-container dpkg-dev apt-utils gnupg iproute2 clamav \
                openssh-client python3-venv util-linux chromium tzdata postgresql
POLICY ?= inventory/policy.mixed.yml
SCENARIO ?= orchestrator/lab/scenarios/mixed.yml
CREDS = --credentials $(LAB_ROOT)/$(LAB)/credentials.yml

.PHONY: demo test deps venv windows-collection lint unit lab-test lab-up lab-down clean stress fuzz pg-up pg-down bench

## make demo: install what is needed, build a 12-host mixed lab (workstations to Defender for
## Endpoint, servers to ClamAV, the DMZ to Falcon), plan it (HTML for managers, with a
## check-mode pass), run the plan, and write the evidence report.
demo: deps venv
	$(BIN)/avmigrate lab up --lab $(LAB) --hosts $(HOSTS) --scenario $(SCENARIO)
	mkdir -p demo
	rm -f $(STATE) $(STATE)-wal $(STATE)-shm
	$(BIN)/avmigrate --state $(STATE) discover -i $(LAB_ROOT)/$(LAB)/inventory.yml --policy $(POLICY)
	# KSC's list of the hosts it manages (the report a KSC managing the lab would export)
	$(BIN)/avmigrate --state $(STATE) ksc import $(LAB_ROOT)/$(LAB)/ksc-hosts.csv
	$(BIN)/avmigrate --state $(STATE) $(CREDS) plan -i $(LAB_ROOT)/$(LAB)/inventory.yml --no-discover --check --policy $(POLICY) --out demo/plan
	$(PY) -m tests.browser demo/plan/plan.html demo/plan/plan.png
	# exit 4: the lab's offline MDE host and its Falcon host in reduced functionality mode fail
	# on purpose and stay protected by KESL; exit 3: hosts left as they were (unreachable)
	$(BIN)/avmigrate --state $(STATE) $(CREDS) run -i $(LAB_ROOT)/$(LAB)/inventory.yml --plan demo/plan/plan.json --yes || { rc=$$?; [ $$rc -eq 3 ] || [ $$rc -eq 4 ]; }
	$(BIN)/avmigrate --state $(STATE) status || { rc=$$?; [ $$rc -eq 3 ] || [ $$rc -eq 4 ]; }
	$(BIN)/avmigrate --state $(STATE) report --format html --out demo/report.html
	$(BIN)/avmigrate --state $(STATE) report --format md --out demo/report.md
	$(BIN)/avmigrate --state $(STATE) report --format csv --out demo/report.csv
	$(BIN)/avmigrate --state $(STATE) report --format json --out demo/report.json
	$(BIN)/avmigrate --state $(STATE) audit verify
	$(PY) -m tests.browser demo/report.html demo/report.png
	@echo "plan (before the run): demo/plan/plan.html .md .csv .json  screenshot demo/plan/plan.png"
	@echo "evidence (after it): demo/report.html .md .csv .json  screenshot demo/report.png"
	@echo "lab inventory: $(LAB_ROOT)/$(LAB)/inventory.yml  (avmigrate lab status --lab $(LAB))"

## make test: install what is needed and run every test, lab tests included. The state tests
## run on SQLite and on a private PostgreSQL server (Debian's package, a UNIX socket only).
## Two workers: each test module goes whole to one worker (--dist loadscope) and a lab test
## module owns its lab, so independent labs come up and run side by side. (pytest 9.2 no
## longer honours xdist_group marks: pytest-xdist issue 1386.)
test: deps venv lint pg-up
	AVMIGRATE_REQUIRE_PG=1 $(BIN)/pytest -n 2 --dist loadscope

pg-up: deps venv
	$(PY) -m tests.pgserver up

pg-down: venv
	$(PY) -m tests.pgserver down

## make bench: planning and state at 1k/10k/100k hosts with Ansible's own loader as the anchor,
## then a 24-host lab migration against bare ansible-playbook (three fresh labs, about 40 min on
## 2 cores); figures printed beside their targets (bench/README.md). Our modules are
## compiled to bytecode first, as an installed copy is.
bench: deps venv
	$(PY) -m compileall -q orchestrator
	$(PY) -m bench.scale
	$(PY) -m bench.lab --sizes 8,24 --forks 8

deps:
	@if [ "$$(id -u)" != 0 ]; then echo "make deps needs root (apt-get, mounts, namespaces)"; exit 2; fi
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# An editable install leaves our modules uncompiled, and with PYTHONDONTWRITEBYTECODE set
# every command would compile them again (50 ms of each `status`): compiled once here.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/python -m compileall -q orchestrator
	$(MAKE) --no-print-directory windows-collection
	touch $@

# The ansible.windows collection, for ansible-lint and the tests of the Windows tasks (Galaxy is
# out of reach here: it is taken from the `ansible` community package's wheel on PyPI, which
# ships it). Users' controllers have it in their own collections path.
ANSIBLE_PACKAGE := ansible==12.3.0
WINDOWS_COLLECTIONS := $(abspath $(VENV))/collections
windows-collection:
	@if [ ! -f $(WINDOWS_COLLECTIONS)/ansible_collections/ansible/windows/MANIFEST.json ]; then \
	  $(BIN)/pip download -q --no-deps '$(ANSIBLE_PACKAGE)' -d $(VENV)/wheels && \
	  $(BIN)/python -c "import glob, zipfile; z = zipfile.ZipFile(glob.glob('$(VENV)/wheels/ansible-*.whl')[0]); \
	    [z.extract(n, '$(WINDOWS_COLLECTIONS)') for n in z.namelist() if n.startswith('ansible_collections/ansible/windows/')]" && \
	  rm -rf $(VENV)/wheels; fi

venv: $(VENV)/.installed

## make lint: ruff (complexity checks included), mypy strict, the layer contracts
## (import-linter: each layer imports only those below it; production never imports the lab)
## and ansible-lint's production profile on the playbooks.
lint: venv windows-collection
	$(BIN)/ruff check orchestrator tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	cd playbooks && ANSIBLE_COLLECTIONS_PATH=$(abspath orchestrator/assets):$(WINDOWS_COLLECTIONS) PATH=$(abspath $(BIN)):$$PATH \
	  ansible-lint --profile production --offline .

unit: venv pg-up
	AVMIGRATE_REQUIRE_PG=1 $(BIN)/pytest -m "not lab"

lab-test: deps venv
	$(BIN)/pytest -m lab -n 2 --dist loadscope

## make stress: the protection oracle on 20,000 random schedules from a new seed (SCHEDULES=N,
## ORACLE_SEED=S; about 20 min), then SIGKILL the orchestrator alone at 100 random moments of
## lab migrations, every other one inside a protection window, and resume each time (KILLS=N;
## SEED=S for another sequence; about 55 min).
KILLS ?= 100
SEED ?= 20241
SCHEDULES ?= 20000
ORACLE_SEED ?= $(shell date +%s)
stress: deps venv
	AVMIGRATE_ORACLE_SCHEDULES=$(SCHEDULES) AVMIGRATE_ORACLE_SEED=$(ORACLE_SEED) \
	  $(BIN)/pytest -s -p no:cacheprovider --durations=0 tests/property/test_oracle.py
	AVMIGRATE_KILLS=$(KILLS) AVMIGRATE_KILL_SEED=$(SEED) AVMIGRATE_FAULT_LAB=stress \
	  $(BIN)/pytest -s -p no:cacheprovider \
	  tests/integration/test_faults.py -k orchestrator_killed

## make fuzz: the inventory and policy loaders under the mutation fuzzer for FUZZ_SECONDS each
## (make test runs it for 20 s); a crashing input is saved in test-artifacts/.
FUZZ_SECONDS ?= 600
FUZZ_SEED ?= $(shell date +%s)
fuzz: venv
	AVMIGRATE_FUZZ_SECONDS=$(FUZZ_SECONDS) AVMIGRATE_FUZZ_SEED=$(FUZZ_SEED) \
	  $(BIN)/pytest -s -p no:cacheprovider tests/fuzz

lab-down: venv
	$(BIN)/avmigrate lab down --lab $(LAB)

clean:
	rm -rf demo avmigrate-plan avmigrate-artifacts .pytest_cache .mypy_cache .ruff_cache
