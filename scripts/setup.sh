#!/bin/sh
# Set up enforcer on a fresh Debian 12 machine (as root): system packages
# for the real-kernel tests and benchmarks, then a virtualenv in .venv with
# enforcer installed in editable mode. Safe to run again.
set -eu
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "setup.sh: run as root (it installs Debian packages)" >&2
    exit 1
fi

# podman, containerd (its CRI plugin) and the OCI runtime-tools suite (built
# with golang-go and make) are the clients the shim's e2e tests drive.
PACKAGES="python3 python3-venv python3-dev gcc libc6-dev libseccomp2 \
    runc busybox-static docker.io prometheus bubblewrap firejail hyperfine \
    systemd iproute2 procps openssl containerd podman golang-go make"
missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing="$missing $p"
done
if [ -n "$missing" ]; then
    apt-get update -qq
    # The prometheus package would start a server under systemd where there is
    # one; the tests start their own on loopback, so keep the packaged one off.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/pip install -q -e '.[test]'

# Replace pip's console scripts with enforcer's fast launchers: they skip
# site initialisation, which is most of the start cost of `enforcer run`
# and the shim (see docs/run.md, "Start latency"). The distribution's
# python3 runs them when it is the same minor version as the venv's.
fast=""
venv_ver=$(.venv/bin/python -c 'import sys; print(sys.version_info[:2])')
if [ -x /usr/bin/python3 ] && [ "$(/usr/bin/python3 -c 'import sys; print(sys.version_info[:2])')" = "$venv_ver" ]; then
    fast="--python /usr/bin/python3"
fi
.venv/bin/python -m enforcer.launcher $fast .venv/bin >/dev/null
echo "setup.sh: ready (.venv/bin/enforcer; the shim: .venv/bin/enforcer-runc with .venv/bin/enforcer-shimd)"
