#!/bin/sh
# Installs what zaggd and its tests need on a fresh Debian 12 machine (as root),
# then zaggd itself in editable mode. Safe to run again: it skips what is there.
set -eu
cd "$(dirname "$0")/.."

APT_PACKAGES="libzmq3-dev logrotate iproute2 procps util-linux debootstrap systemd-container \
lintian rpm debhelper dh-python pybuild-plugin-pyproject python3-all fakeroot python3-setuptools"

missing=""
for pkg in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "setup: installing Debian packages:$missing"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    else
        echo "setup: missing Debian packages (run as root to install):$missing" >&2
    fi
fi

# pyzmq built against Debian's libzmq, which has PGM (multicast); PyPI's wheel has not.
if ! python3 -c 'import zmq, sys; sys.exit(0 if zmq.has("pgm") else 1)' 2>/dev/null; then
    echo "setup: building pyzmq against the system libzmq (for epgm://)"
    PIP_NO_BINARY=pyzmq python3 -m pip install -q --force-reinstall --no-deps pyzmq
fi
python3 -m pip install -q -e '.[test]'
