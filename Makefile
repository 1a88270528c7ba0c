# The two set-up commands: `make run` and `make test`. Everything else is derived.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
APT_PACKAGES := openssh-server cryptsetup-bin age

.PHONY: run test lint typecheck pytest lab-deps vm-deps vm-test bench bench-vm clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## make run: the bot; the terminal console when no token is configured
run: $(STAMP)
	$(VENV)/bin/deploybot run --console-without-token

## make test: install what the lab needs, then lint, type-check and run the tests;
## then the VM lab's tier (real guests under qemu; DEPLOYBOT_TEST_VM=skip leaves it out)
test: $(STAMP) lab-deps lint typecheck pytest vm-test

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

vm-deps:
	@if [ "$$DEPLOYBOT_TEST_VM" != skip ]; then \
		missing=""; \
		command -v qemu-system-x86_64 >/dev/null || missing="$$missing qemu-system-x86"; \
		command -v qemu-img >/dev/null || missing="$$missing qemu-utils"; \
		command -v mmdebstrap >/dev/null || missing="$$missing mmdebstrap"; \
		if [ -n "$$missing" ]; then \
			echo "installing:$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
		fi; \
	fi

## make vm-test: only the VM lab (tests/vm); the first run builds its guest images
vm-test: $(STAMP) lab-deps vm-deps
	@if [ "$$DEPLOYBOT_TEST_VM" = skip ]; then \
		echo "VM lab (tests/vm) left out: DEPLOYBOT_TEST_VM=skip"; \
	else \
		$(VENV)/bin/pytest tests/vm; \
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

bench-vm: $(STAMP) lab-deps vm-deps
	$(PY) -m bench.vm

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache
