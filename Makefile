# zaggd packages. `make deb` and `make rpm` build from the working tree and
# leave zaggd_VERSION_all.deb and zaggd-VERSION-1.noarch.rpm in dist/.
# The version comes from zaggd/__init__.py, and only from there.

VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' zaggd/__init__.py)
BUILD := build
DIST := dist
# System tools only: no pyenv or virtualenv Python in a package build.
SYSTEM_ENV := env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=$(HOME) LC_ALL=C.UTF-8
# What a package is built from: the source tree without VCS data, build
# output, local environments and caches.
TREE_EXCLUDES := --exclude=./.git --exclude=./$(BUILD) --exclude=./$(DIST) \
	--exclude=./demo --exclude=./.venv --exclude=__pycache__ --exclude='*.egg-info' \
	--exclude=.pytest_cache --exclude=.mypy_cache --exclude=.ruff_cache --exclude=.hypothesis
DEB_SRC := $(BUILD)/deb/zaggd-$(VERSION)
RPM_TOP := $(abspath $(BUILD))/rpm
# rpmbuild cannot check BuildRequires on a host whose rpm database is empty
# (Debian): skip the check there.
RPMBUILD_FLAGS ?= $(shell rpm -q rpm >/dev/null 2>&1 || echo --nodeps)

.PHONY: deb rpm lintian clean version

version:
	@test -n "$(VERSION)" || { echo "no __version__ in zaggd/__init__.py" >&2; exit 1; }
	@echo $(VERSION)

deb: version
	rm -rf $(BUILD)/deb
	mkdir -p $(DEB_SRC) $(DIST)
	tar -cf - $(TREE_EXCLUDES) . | tar -xf - -C $(DEB_SRC)
	cp -a packaging/debian $(DEB_SRC)/debian
	packaging/deb-changelog-version $(DEB_SRC)/debian/changelog $(VERSION)
	cd $(DEB_SRC) && $(SYSTEM_ENV) dpkg-buildpackage -us -uc -b
	cp $(BUILD)/deb/zaggd_$(VERSION)_all.deb $(DIST)/

lintian: deb
	$(SYSTEM_ENV) lintian --fail-on error $(DIST)/zaggd_$(VERSION)_all.deb

rpm: version
	rm -rf $(BUILD)/rpm
	mkdir -p $(BUILD)/rpm/SOURCES $(DIST)
	tar -czf $(BUILD)/rpm/SOURCES/zaggd-$(VERSION).tar.gz $(TREE_EXCLUDES) \
		--transform 's,^\.,zaggd-$(VERSION),' .
	$(SYSTEM_ENV) rpmbuild -bb $(RPMBUILD_FLAGS) \
		--define '_topdir $(RPM_TOP)' --define 'zaggd_version $(VERSION)' \
		packaging/rpm/zaggd.spec
	cp $(BUILD)/rpm/RPMS/noarch/zaggd-$(VERSION)-1.noarch.rpm $(DIST)/

clean:
	rm -rf $(BUILD) $(DIST)
