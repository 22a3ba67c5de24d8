# Set-up, demo and tests on a Debian 12 host (run as root: the tools install packages,
# and the tests build and unpack real root filesystems).
VENV   := .venv
PY     := $(VENV)/bin/python
PYTEST := TMPL2DEB_REQUIRE_TOOLS=1 TMPL2DEB_REQUIRE_ROOT=1 $(PY) -m pytest
DEBS   := python3-debian python3-arpy python3-pytest python3-venv python3-pip cpio \
          flit tar zstd xz-utils gzip binutils dpkg-dev mmdebstrap lintian acl attr libcap2-bin \
          reprepro gnupg gpgv ca-certificates man-db groff-base libarchive-tools git graphviz \
          debhelper dh-python pybuild-plugin-pyproject python3-all

.PHONY: deps demo test lint check-quick bench bench-delta deb autopkgtest clean doc

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

# the picture in README.md, from its Graphviz source (tests/test_doc.py checks it is current)
doc: doc/flow.svg

doc/flow.svg: doc/flow.dot
	dot -Tsvg $< -o $@

check-quick: deps
	$(PYTEST) -m "not integration and not network"

bench: deps
	$(PY) bench/bench.py

bench-delta: deps
	$(PY) bench/delta.py

# The Debian package of tmpl2deb, built with its tests from a copy of the tracked files
# (Debian's own python3 first in PATH), then checked with lintian; result in build/.
deb: deps
	rm -rf build && mkdir -p build/src
	git ls-files -co --exclude-standard | tar -cf - -T - | tar -C build/src -xf -
	cd build/src && PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -us -uc -b
	lintian --fail-on error build/tmpl2deb_*_all.deb

# The autopkgtests (debian/tests) on this machine, against the package `make deb` built.
# It installs tmpl2deb on this machine.
autopkgtest: deb
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends autopkgtest
	PATH=/usr/sbin:/usr/bin:/sbin:/bin autopkgtest build/tmpl2deb_*_all.deb build/src -- null

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build
