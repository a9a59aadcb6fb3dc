# The two commands of the README (run as root on Debian 12 / Ubuntu 22.04+):
#   make up     system packages, a venv with labctl, then `labctl up` of the seed lab
#   make test   the same setup, then the test suite (real namespaces, sshd, BIRD, ansible)
#   make unit   the unit tier only (no root, no namespaces, no VMs, no ansible-playbook), <= 60 s; tiers: docs/development.md
VENV    ?= .venv
PYTHON  ?= python3
APT_PACKAGES = bird2 tcpdump sudo openssh-server openssh-client iproute2 iputils-ping procps util-linux python3 python3-venv python3-pip python3-apt openssl
# only `make test` needs these (the qemu provider's real VMs, its dnsmasq; chromium: `labctl view`'s page in a
# real browser, tests/test_view.py); `make up` (netns) does not
QEMU_APT_PACKAGES = qemu-system-x86 qemu-utils mmdebstrap e2fsprogs apt-cacher-ng dnsmasq-base cloud-image-utils iptables chromium chromium-driver
PYTEST_ARGS ?=

.PHONY: deps qemu-deps venv up down verify test unit bench bench-qemu lint clean

deps:
	@if [ "$$(id -u)" != 0 ]; then echo "run as root (sudo make ...): namespaces and apt need it" >&2; exit 1; fi
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null

qemu-deps: deps
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(QEMU_APT_PACKAGES) >/dev/null

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

up: deps venv
	$(VENV)/bin/labctl up
	$(VENV)/bin/labctl inspect

down: venv
	$(VENV)/bin/labctl down

verify: venv
	$(VENV)/bin/labctl verify

test: deps qemu-deps venv
	$(VENV)/bin/python -m pytest -v -n 2 --dist loadfile $(PYTEST_ARGS) tests

unit: venv
	$(VENV)/bin/python -m pytest -q -m unit --hypothesis-profile=unit -n auto $(PYTEST_ARGS) tests

bench: deps venv
	$(VENV)/bin/python bench/up.py

bench-qemu: qemu-deps venv
	$(VENV)/bin/python bench/qemu.py

lint: venv
	$(VENV)/bin/ansible-lint --profile production playbooks/
	$(VENV)/bin/yamllint -s playbooks/
	$(VENV)/bin/yamllint -s -c inventories/.yamllint inventories/
	$(VENV)/bin/zizmor --offline .github/workflows/
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml

clean:
	rm -rf $(VENV) build dist *.egg-info
