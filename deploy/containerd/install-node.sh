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
#   4. adds the runtime handlers to /etc/containerd/config.toml itself,
#      between two marker lines (a second run replaces them): config
#      version 2 for containerd 1.6/1.7, 3 for containerd 2.x (detected).
#      Not through `imports`: containerd replaces a whole plugin section
#      with an imported file's, so the node's CRI settings (sandbox image,
#      CNI, its runc handler's SystemdCgroup) would be lost, and with them
#      the default `runc` handler, without which the CRI plugin does not
#      load. For the same reason a config that names no `runc` handler
#      gets containerd's default one written out beside ours;
#   5. (reserved: older versions wrote conf.d/enforcer-runtimes.toml and an
#      `imports` line; that file is removed, the line left alone);
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

case "$config_version" in
    2) cri_table='plugins."io.containerd.grpc.v1.cri".containerd' ;;
    3) cri_table="plugins.'io.containerd.cri.v1.runtime'.containerd" ;;
esac
begin_marker="# >>> enforcer runtime handlers (written by install-node.sh; a re-run replaces them)"
end_marker="# <<< enforcer runtime handlers"

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

# 4. the runtime handlers, in config.toml itself (see the header for why)
config="$root/etc/containerd/config.toml"
install -d -m 0755 "$root/etc/containerd"
kept="$config.enforcer-kept"
if [ -e "$config" ]; then
    # Everything but a previous run's block (and the blank lines before it).
    awk -v b="$begin_marker" -v e="$end_marker" '
        $0 == b {skip = 1; next}
        $0 == e {skip = 0; next}
        skip {next}
        $0 == "" {blank++; next}
        {while (blank > 0) {print ""; blank--} print}' "$config" > "$kept"
else
    # No config: containerd runs on defaults; the handlers join them.
    printf 'version = %s\n' "$config_version" > "$kept"
fi
if grep -q '\.runtimes\.enforcer[]-]' "$kept"; then
    rm -f "$kept"
    fail "$config already defines enforcer handlers outside install-node.sh's block; remove them first"
fi
tmp="$config.enforcer-tmp"
{
    cat "$kept"
    echo
    echo "$begin_marker"
    if ! grep -q '\.runtimes\.runc\]' "$kept"; then
        echo "# containerd's built-in runc handler: a config that defines any handler loses it."
        echo "[$cri_table.runtimes.runc]"
        echo '  runtime_type = "io.containerd.runc.v2"'
        echo
    fi
    grep -v '^version *=' "$snippet"
    echo "$end_marker"
} > "$tmp"
rm -f "$kept"
if [ -e "$config" ]; then
    chmod --reference="$config" "$tmp" 2>/dev/null || chmod 0644 "$tmp"
else
    chmod 0644 "$tmp"
fi
if [ -z "$root" ] && command -v containerd >/dev/null 2>&1 \
        && ! containerd --config "$tmp" config dump >/dev/null 2>&1; then
    rm -f "$tmp"
    fail "containerd does not accept $config with the handlers added (left unchanged): check it with 'containerd config dump'"
fi
mv -f "$tmp" "$config"

# 5. what older versions installed: the conf.d file they imported
rm -f "$root/etc/containerd/conf.d/enforcer-runtimes.toml"

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
