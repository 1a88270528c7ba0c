# The two set-up commands: `make run` and `make test`. Everything else is derived.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
APT_PACKAGES := openssh-server cryptsetup-bin age

.PHONY: run test lint typecheck pytest lab-deps bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## make run: the bot; the terminal console when no token is configured
run: $(STAMP)
	$(VENV)/bin/deploybot run --console-without-token

## make test: install what the lab needs, then lint, type-check and run the tests
test: $(STAMP) lab-deps lint typecheck pytest

lab-deps:
	@missing=""; \
	test -x /usr/sbin/sshd || missing="$$missing openssh-server"; \
	test -x /usr/sbin/cryptsetup || test -x /sbin/cryptsetup || missing="$$missing cryptsetup-bin"; \
	command -v age-keygen >/dev/null || missing="$$missing age"; \
	command -v nix-instantiate >/dev/null || missing="$$missing nix-bin"; \
	command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP) lab-deps
	$(VENV)/bin/pytest

bench: $(STAMP) lab-deps
	$(PY) -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache
