#!/bin/sh
# Sets up this machine for zaggd: Debian packages (as root, on Debian 12), then a
# virtual environment .venv with zaggd installed from this tree in editable mode.
# With --test, also what the tests need. Safe to run again: it skips what is there.
#
# Debian 12's python3 refuses pip installs outside a virtual environment
# (PEP 668) and has no venv module until python3-venv is installed: everything
# goes into .venv, made with --system-site-packages so that it sees a pyzmq
# with multicast (PGM): Debian's python3-zmq, or one built against the system
# libzmq (PyPI's wheel has no PGM). PYTHON picks the interpreter (python3).
set -eu
cd "$(dirname "$0")/.."

WANT_TEST=""
[ "${1:-}" = "--test" ] && WANT_TEST=1
PYTHON="${PYTHON:-python3}"

APT_PACKAGES="python3 python3-venv python3-zmq"
if [ -n "$WANT_TEST" ]; then
    APT_PACKAGES="$APT_PACKAGES make logrotate iproute2 procps util-linux debootstrap \
systemd-container lintian rpm debhelper dh-python pybuild-plugin-pyproject python3-all \
fakeroot python3-setuptools python3-wheel"
fi

apt_install() {
    missing=""
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing="$missing $pkg"
    done
    [ -n "$missing" ] || return 0
    if [ "$(id -u)" != 0 ]; then
        echo "setup: missing Debian packages (run as root to install):$missing" >&2
        return 0
    fi
    echo "setup: installing Debian packages:$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

if command -v dpkg-query >/dev/null; then
    apt_install $APT_PACKAGES
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: making the virtual environment .venv ($PYTHON)"
    "$PYTHON" -m venv --system-site-packages .venv
fi
VENV_PYTHON=.venv/bin/python

if ! $VENV_PYTHON -c 'import zmq, sys; sys.exit(0 if zmq.has("pgm") else 1)' 2>/dev/null; then
    echo "setup: building pyzmq against the system libzmq (for epgm://)"
    command -v dpkg-query >/dev/null && apt_install libzmq3-dev
    PIP_NO_BINARY=pyzmq $VENV_PYTHON -m pip install -q --force-reinstall --no-deps pyzmq
fi
if [ -n "$WANT_TEST" ]; then
    $VENV_PYTHON -m pip install -q -e '.[test]'
else
    $VENV_PYTHON -m pip install -q -e .
fi
