#!/bin/sh
# Node setup, part 1: register enforcer's runtime handlers with containerd.
#
#   install-node.sh [--root DIR] [--python PY] [--config-version 2|3] [--no-plans] [--no-restart]
#
# Run as root when a node is built (image bake, cloud-init, Ansible), after
# installing the enforcer package for PY (default python3). It:
#   1. writes the commands into /usr/local/bin (`PY -m enforcer.launcher`):
#      enforcer; enforcer-runc, the runtime (a compiled front end, built
#      with the node's C compiler); enforcer-runc-py, the Python shim it
#      falls back to; enforcer-shimd, the server it hands the work to;
#   2. installs the per-policy wrappers (bin/enforcer-runc-<policy>) into
#      /usr/local/bin: containerd's runc shim runs BinaryName without extra
#      arguments, the wrapper adds `--policy <policy>`;
#   3. installs enforcer-shimd.socket and .service into /etc/systemd/system
#      and enables the socket; where systemd runs, starts it (and restarts a
#      running server, so that it serves the code just installed);
#   4. installs the runtime handlers into /etc/containerd/conf.d/enforcer-runtimes.toml
#      (config version 2 for containerd 1.6/1.7, 3 for containerd 2.x; detected);
#   5. makes /etc/containerd/config.toml import /etc/containerd/conf.d/*.toml
#      (adds the line when there is no `imports`; refuses to edit an existing
#      `imports` that lacks it: add the path there yourself);
#   6. precompiles the shipped policies into /etc/enforcer/plans/<policy>.json
#      (the shim's fast path: no compiler on container start);
#   7. raises net.core.rmem_max to 32 MiB (/etc/sysctl.d/10-enforcer-monitor.conf)
#      so the monitor gets its audit socket buffer without CAP_NET_ADMIN (a
#      small buffer overruns in a burst; a later sysctl.d file of yours wins);
#   8. restarts containerd.
# Then label the node:  kubectl label node NODE io.enforcer/runtime=installed
#
# --root DIR writes everything under DIR (to build an image, or to test);
# the paths inside the files stay the node's own, the socket is enabled by
# its symlink alone and neither systemd nor containerd is touched.
# --no-restart installs and enables but starts or restarts nothing (a
# server already running keeps its old code until it is restarted).
# Safe to run again.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
systemd_dir=$(cd "$here/../systemd" && pwd)
root=""
config_version=""
python=python3
plans=1
restart=1
while [ $# -gt 0 ]; do
    case "$1" in
        --root) root="${2:?--root needs a directory}"; shift 2 ;;
        --root=*) root="${1#--root=}"; shift ;;
        --python) python="${2:?--python needs an interpreter}"; shift 2 ;;
        --python=*) python="${1#--python=}"; shift ;;
        --config-version) config_version="${2:?--config-version needs 2 or 3}"; shift 2 ;;
        --config-version=*) config_version="${1#--config-version=}"; shift ;;
        --no-plans) plans=0; shift ;;
        --no-restart) restart=0; shift ;;
        -h|--help) sed -n '2,36p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install-node.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

fail() { echo "install-node.sh: $*" >&2; exit 1; }

if [ -z "$config_version" ]; then
    # containerd 2.x reads config version 3; 1.6 and 1.7 read version 2.
    major=$(containerd --version 2>/dev/null | sed -n 's/.* v\{0,1\}\([0-9][0-9]*\)\.[0-9].*/\1/p')
    case "$major" in
        1) config_version=2 ;;
        2) config_version=3 ;;
        *) fail "cannot tell containerd's version; pass --config-version 2 or 3" ;;
    esac
fi
case "$config_version" in
    2) snippet="$here/enforcer-runtimes.toml" ;;
    3) snippet="$here/enforcer-runtimes.v3.toml" ;;
    *) fail "--config-version must be 2 or 3, not $config_version" ;;
esac

conf_dir=/etc/containerd/conf.d
imports_line="imports = [\"$conf_dir/*.toml\"]"

# 1. the commands: enforcer, enforcer-runc (the front end), enforcer-runc-py
# (its fallback, found next to it), enforcer-shimd (the server)
"$python" -c 'import enforcer' 2>/dev/null \
    || fail "$python cannot import enforcer: install the package first, or pass --python"
install -d -m 0755 "$root/usr/local/bin"
"$python" -m enforcer.launcher "$root/usr/local/bin" >/dev/null \
    || fail "$python -m enforcer.launcher $root/usr/local/bin failed"
[ -x "$root/usr/local/bin/enforcer-runc-py" ] && [ -x "$root/usr/local/bin/enforcer-shimd" ] \
    || fail "enforcer.launcher did not write enforcer-runc-py and enforcer-shimd: upgrade enforcer"
case "$(head -c 4 "$root/usr/local/bin/enforcer-runc" | od -An -c | tr -d ' ')" in
    *ELF*) ;;
    *) echo "install-node.sh: no C compiler here: enforcer-runc is the Python shim (slower; see docs/shim.md)" >&2 ;;
esac

# 2. wrappers
for w in "$here"/bin/enforcer-runc-*; do
    [ -e "$w" ] || fail "no wrappers in $here/bin (run deploy/generate.py)"
    install -m 0755 "$w" "$root/usr/local/bin/${w##*/}"
done

# 3. the shim server: socket-activated, so the socket is what gets enabled
units="$root/etc/systemd/system"
install -d -m 0755 "$units" "$units/sockets.target.wants"
install -m 0644 "$systemd_dir/enforcer-shimd.socket" "$units/enforcer-shimd.socket"
install -m 0644 "$systemd_dir/enforcer-shimd.service" "$units/enforcer-shimd.service"
if [ -z "$root" ] && [ -d /run/systemd/system ]; then
    # systemd is PID 1 here.
    systemctl daemon-reload
    if [ "$restart" = 1 ]; then
        systemctl enable --now enforcer-shimd.socket
        systemctl try-restart enforcer-shimd.service
    else
        systemctl enable enforcer-shimd.socket
    fi
else
    # What `systemctl enable` does, as a file: an image boots with it enabled.
    ln -sfn /etc/systemd/system/enforcer-shimd.socket "$units/sockets.target.wants/enforcer-shimd.socket"
    [ -n "$root" ] || echo "install-node.sh: systemd is not running here: start" \
        "/usr/local/bin/enforcer-shimd yourself (without it enforcer-runc runs the Python shim)" >&2
fi

# 4. runtime handlers
install -d -m 0755 "$root$conf_dir"
install -m 0644 "$snippet" "$root$conf_dir/enforcer-runtimes.toml"

# 5. the import in config.toml
config="$root/etc/containerd/config.toml"
if [ ! -e "$config" ]; then
    # No config: containerd runs on defaults; this keeps them and adds ours.
    printf 'version = %s\n%s\n' "$config_version" "$imports_line" > "$config"
elif grep -q '^[[:space:]]*imports[[:space:]]*=' "$config"; then
    grep '^[[:space:]]*imports[[:space:]]*=' "$config" | grep -qF "\"$conf_dir/*.toml\"" \
        || fail "$config already has an imports line; add \"$conf_dir/*.toml\" to it"
else
    # A top-level key must come before the first [table]: put it first.
    tmp="$config.enforcer-tmp"
    { echo "$imports_line"; cat "$config"; } > "$tmp"
    chmod --reference="$config" "$tmp" 2>/dev/null || chmod 0644 "$tmp"
    mv -f "$tmp" "$config"
fi

# 6. precompiled Plans for the shipped policies
if [ "$plans" = 1 ]; then
    install -d -m 0755 "$root/etc/enforcer/plans"
    for w in "$here"/bin/enforcer-runc-*; do
        policy="${w##*/enforcer-runc-}"
        enforcer compile "$policy" -o "$root/etc/enforcer/plans/$policy.json" \
            || fail "enforcer compile $policy failed"
    done
fi

# 7. socket buffer limit for the monitor
install -d -m 0755 "$root/etc/sysctl.d"
sysctl_conf="$root/etc/sysctl.d/10-enforcer-monitor.conf"
printf '%s\n' \
    "# enforcer monitor: a 32 MiB audit netlink buffer without CAP_NET_ADMIN." \
    "net.core.rmem_max = 33554432" > "$sysctl_conf"
chmod 0644 "$sysctl_conf"
if [ -z "$root" ]; then
    sysctl -q -p "$sysctl_conf"
fi

# 8. restart
if [ "$restart" = 1 ] && [ -z "$root" ]; then
    systemctl restart containerd
fi
echo "install-node.sh: enforcer runtime handlers installed${root:+ under $root}"
