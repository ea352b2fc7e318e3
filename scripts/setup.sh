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
    systemd iproute2 procps openssl containerd podman golang-go make \
    nginx redis-server redis-tools postgresql-15 postgresql-client-15 wrk curl"
missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing="$missing $p"
done
if [ -n "$missing" ]; then
    apt-get update -qq
    # The server packages (prometheus; nginx, redis-server and postgresql-15
    # for the example policies' tests) would start the system's own
    # services, nginx on port 80 of every interface. The tests start their
    # own, on loopback and scratch ports: while installing, a policy-rc.d
    # (Debian's switch for maintainer scripts) keeps every service off,
    # unless the machine already has one of its own.
    own_policy_rc=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        own_policy_rc=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\n# scripts/setup.sh: no service starts while it installs\nexit 101\n' > "$own_policy_rc"
        chmod 755 "$own_policy_rc"
        trap 'rm -f "$own_policy_rc"' EXIT
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
    if [ -n "$own_policy_rc" ]; then
        rm -f "$own_policy_rc"
        trap - EXIT
    fi
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
