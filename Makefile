# The two commands of the README: `make demo` (run) and `make test` (the whole suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo serve deps test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/transit-gateway demo

serve: $(STAMP)
	$(BIN)/transit-gateway serve

lint: $(STAMP)
	$(BIN)/ruff check gateway feeds tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache  # the import boundaries: [tool.importlinter] in pyproject.toml

# What the suite needs from the system, Debian packages: `command=package` (installed when the
# command is not on PATH) or `package` (installed when dpkg does not know it). The tests start
# these servers themselves (tests/conftest.py) and fail, not skip, without them.
DEB_NEEDS := redis-server=redis-server
APT_GET ?= apt-get

# Only when something is missing: one `apt-get update`, one `apt-get install` (as root, or
# through sudo), then check that every command is there.
deps:
	@set -e; missing=""; \
	for need in $(DEB_NEEDS); do \
	  case "$$need" in \
	    *=*) command -v "$${need%%=*}" >/dev/null 2>&1 || missing="$$missing $${need#*=}" ;; \
	    *) dpkg -s "$$need" >/dev/null 2>&1 || missing="$$missing $$need" ;; \
	  esac; \
	done; \
	[ -n "$$missing" ] || exit 0; \
	echo "make deps: installing Debian packages:$$missing"; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "make deps: no apt-get here; install$$missing (tests/conftest.py starts them)" >&2; \
	  exit 1; \
	fi; \
	sudo=""; \
	if [ "$$(id -u)" != 0 ]; then \
	  command -v sudo >/dev/null 2>&1 || { \
	    echo "make deps: as root: apt-get install$$missing" >&2; exit 1; }; \
	  sudo=sudo; \
	fi; \
	$$sudo env DEBIAN_FRONTEND=noninteractive $(APT_GET) update -qq; \
	$$sudo env DEBIAN_FRONTEND=noninteractive $(APT_GET) install -y -qq --no-install-recommends \
	  $$missing; \
	for need in $(DEB_NEEDS); do \
	  case "$$need" in *=*) command -v "$${need%%=*}" >/dev/null 2>&1 || { \
	    echo "make deps: still no $${need%%=*} after installing $${need#*=}" >&2; exit 1; } ;; \
	  esac; \
	done

test: deps $(STAMP) lint
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
