# Set-up, demo and tests on a Debian 12 host (run as root: the tools install packages,
# and the tests build and unpack real root filesystems).
VENV   := .venv
PY     := $(VENV)/bin/python
PYTEST := TMPL2DEB_REQUIRE_TOOLS=1 $(PY) -m pytest
DEBS   := python3-debian python3-apt python3-arpy python3-pytest python3-venv python3-pip \
          flit tar zstd xz-utils gzip binutils dpkg-dev mmdebstrap lintian acl attr libcap2-bin \
          reprepro gnupg pandoc ca-certificates

.PHONY: deps demo test lint check-quick bench clean

$(VENV)/.deps:
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(DEBS)
	/usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --no-build-isolation -e . ruff==0.8.4 mypy==1.13.0
	touch $@

deps: $(VENV)/.deps

demo: deps
	$(PY) demo/run

lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint
	$(PYTEST)

check-quick: deps
	$(PYTEST) -m "not integration"

bench: deps
	$(PY) bench/bench.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
