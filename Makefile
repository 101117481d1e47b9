# imagetasks — the commands a newcomer can guess. `make test` is exactly what CI runs.
# Any Python 3.11 or newer: the first of these that is one (or PYTHON=/path/to/python3.x).
PYTHON ?= $(firstword $(foreach candidate,python3.11 python3.12 python3.13 python3.14 python3,\
	$(shell $(candidate) -c 'import sys; print("$(candidate)" if sys.version_info >= (3, 11) else "")' 2>/dev/null)))
VENV := .venv
SAM_VENV := .venv-sam
LINT_VENV := .venv-lint
PY := $(VENV)/bin/python
export PYTHONPATH := layers/common/python:.
export SAM_CLI_TELEMETRY := 0

.PHONY: prerequisites help install run invoke sam-invoke test lint unit integration local-test e2e bench token clean build containers containers-test e2e-containers worker-image console-screenshots

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(VENV)/.installed: requirements.txt requirements-dev.txt layers/dependencies/requirements.txt client/pyproject.toml
	@test -n "$(PYTHON)" || { echo "make: no Python 3.11 or newer found (python3.11 ... python3); set PYTHON=/path/to/python3.x" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements-dev.txt
	touch $@

# aws-sam-cli lives in its own environment: installed beside moto it can downgrade boto3.
$(SAM_VENV)/.installed:
	@test -n "$(PYTHON)" || { echo "make: no Python 3.11 or newer found (python3.11 ... python3); set PYTHON=/path/to/python3.x" >&2; exit 1; }
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install -q --upgrade pip
	$(SAM_VENV)/bin/pip install -q aws-sam-cli==1.170.0
	touch $@

# The template checkers, apart too: checkov pins its own versions of boto3, pydantic and friends.
$(LINT_VENV)/.installed:
	$(PYTHON) -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/pip install -q --upgrade pip
	$(LINT_VENV)/bin/pip install -q cfn-lint==1.58.0 checkov==3.3.30
	touch $@

# What make test needs that only root can install: said in one sentence, before anything runs.
prerequisites:
	@command -v qemu-img >/dev/null || { echo "make test needs qemu-img: as root, apt-get install -y qemu-utils" >&2; exit 1; }
	@command -v podman >/dev/null || { echo "make test needs the container tier: as root, make containers" >&2; exit 1; }
	@command -v chromedriver >/dev/null || { echo "make test needs chromium (the console's browser tests): as root, apt-get install -y chromium chromium-driver" >&2; exit 1; }

install: $(VENV)/.installed $(SAM_VENV)/.installed $(LINT_VENV)/.installed  ## create the virtual environments

# The local stack reads template.yaml through aws-sam-translator, which lives in .venv-sam.
run: $(VENV)/.installed $(SAM_VENV)/.installed  ## the whole service locally: API on :3000, AWS endpoint on :5000 (ARGS="--api-port 8000")
	$(PY) -m local $(ARGS)

# `@`: make's echo of the command would land on stdout, before the payload.
invoke: $(VENV)/.installed $(SAM_VENV)/.installed  ## one function with an event file, in-process like sam local invoke: make invoke EVENT=events/tasks_api_list.json (FUNCTION=TasksApiFunction optional; docs/local.md lists the events)
	@$(PY) -m local.invoke $(FUNCTION) $(EVENT) $(ARGS)

# The same, through SAM's own `sam local invoke` on the built artifact in a container (make build, make containers).
sam-invoke: $(VENV)/.installed $(SAM_VENV)/.installed  ## one built function with an event file through sam local invoke in a container: make sam-invoke EVENT=events/tasks_api_list.json (FUNCTION optional; ARGS=--running: against the make run ARGS=--containers going on)
	@$(PY) -m local.invoke --sam $(FUNCTION) $(EVENT) $(ARGS)

token: $(VENV)/.installed  ## mint a local token: export TOKEN=$(make -s token PROJECT=p1 ROLES=member,admin) (needs `make run` running)
	@$(PY) -m local.tokens --key-file local/.state/token.key --project $(PROJECT) --roles $(or $(ROLES),member)

lint: $(VENV)/.installed $(SAM_VENV)/.installed $(LINT_VENV)/.installed  ## ruff, mypy (strict on application code), sam validate --lint, cfn-lint, checkov
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy layers/common/python/imagetasks local $(wildcard functions/*/app.py)
	$(VENV)/bin/mypy client
	$(SAM_VENV)/bin/sam validate --lint --region us-east-1
	$(LINT_VENV)/bin/cfn-lint template.yaml
	CKV_SKIP_PACKAGE_UPDATE_CHECK=true $(LINT_VENV)/bin/checkov -f template.yaml --framework cloudformation \
		--skip-download --compact --quiet

# The functions declare python3.13: sam build needs that interpreter on PATH (local/find-python3.13
# looks in $$PYTHON313, on PATH and in pyenv). QemuLayer copies the host's qemu-img (qemu-utils).
build: $(SAM_VENV)/.installed  ## sam build: the deployable artifact in .aws-sam/build (needs Python 3.13, qemu-img)
	@command -v qemu-img >/dev/null || { echo "make build: qemu-img missing: apt-get install -y qemu-utils" >&2; exit 1; }
	@py313=$$(local/find-python3.13) || exit 1; \
	echo "sam build with $$py313"; \
	PATH="$$(dirname $$py313):$$PATH" $(SAM_VENV)/bin/sam build --cached --parallel

# The container runner's image (worker/Dockerfile): the code and qemu-img `sam build` made, on Debian.
worker-image: build  ## the container runner's image; ECR_REPOSITORY=<uri> pushes it and prints WorkerImageUri
	ECR_REPOSITORY="$(ECR_REPOSITORY)" worker/build-image.sh

containers: $(SAM_VENV)/.installed  ## podman, base and Lambda stand-in images, internal network (root; idempotent)
	local/containers.sh setup

containers-test: $(VENV)/.installed build  ## the built functions in Lambda-like containers (needs `make containers`)
	$(VENV)/bin/pytest tests/build tests/containers -q

unit: $(VENV)/.installed $(SAM_VENV)/.installed
	$(VENV)/bin/pytest tests/unit -q

integration: $(VENV)/.installed $(SAM_VENV)/.installed
	$(VENV)/bin/pytest tests/integration -q

# The local stack's own tests (local/: moto fixes and hooks, the template reader, the front, tokens).
local-test: $(VENV)/.installed $(SAM_VENV)/.installed
	$(VENV)/bin/pytest tests/local -q

e2e: $(VENV)/.installed $(SAM_VENV)/.installed
	$(VENV)/bin/pytest tests/e2e -q

# The second run: the end-to-end tests marked `artifact`, with every function of the stack on the
# built artifact in containers (skipped with the reason when the container tier is not set up).
# The in-process tiers run on TEST_WORKERS processes (pytest-xdist): unit and integration tests
# spread freely; end-to-end tests go file by file, each worker with its own local stack. The
# container tiers share one podman service, so they run alone.
# Every tier records the AWS calls each role makes (IMAGETASKS_IAM_LEDGER, one file per process);
# the last step writes docs/iam.md from them and fails on a grant no test uses and no reason explains.
TEST_WORKERS ?= 2
IAM_LEDGER := $(CURDIR)/.iam-ledger
test: export IMAGETASKS_IAM_LEDGER := $(IAM_LEDGER)
# lint (CPU) and sam build (mostly downloads and copies on a fresh clone) run side by side; each
# one's output is printed whole when it ends.
test: prerequisites  ## lint, sam build, every test tier, the artifact e2e tests on the built functions in containers, then the IAM ledger check
	$(MAKE) --no-print-directory -j2 --output-sync=target lint build
	rm -rf $(IAM_LEDGER)
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS) tests/local tests/unit tests/integration
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadfile tests/e2e
	$(VENV)/bin/pytest -q tests/build tests/containers
	IMAGETASKS_CONTAINERS=1 $(VENV)/bin/pytest -q -m artifact tests/e2e
	$(PY) -m tests.iam_ledger --calls $(IAM_LEDGER) --check

e2e-containers: $(VENV)/.installed build  ## the artifact e2e tests with every function in a container
	IMAGETASKS_CONTAINERS=1 $(VENV)/bin/pytest -q -m artifact tests/e2e

# The console's browser tests, each saving the view it checks: docs/console/*.png (needs chromium).
console-screenshots: $(VENV)/.installed $(SAM_VENV)/.installed  ## the task console's screenshots in docs/console/ (its browser tests, run once)
	IMAGETASKS_CONSOLE_SCREENSHOTS=$(CURDIR)/docs/console IMAGETASKS_REQUIRE_BROWSER=1 \
		$(VENV)/bin/pytest -q tests/e2e/test_console_e2e.py

bench: $(VENV)/.installed  ## benchmarks; figures go to bench/results.json and bench/RESULTS.md
	$(PY) -m bench $(ARGS)

clean:
	rm -rf $(VENV) $(SAM_VENV) $(LINT_VENV) .pytest_cache .mypy_cache .ruff_cache .aws-sam local/.state .iam-ledger
