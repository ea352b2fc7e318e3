#!/bin/sh
# Start latency of `enforcer run` against the other ways to start a confined
# /bin/true, interleaved in one hyperfine run so load on the machine hits all
# of them alike. Needs root, hyperfine, bubblewrap, firejail, runc and
# busybox-static (all Debian packages).
#
#   sh bench/start_latency.sh [RUNS]          (default 60 runs each)
#
# Writes the hyperfine table to bench/results/start-latency.md (appended with
# the date and kernel) and the raw JSON next to it.
set -eu
cd "$(dirname "$0")/.."
RUNS=${1:-60}
PY=${ENFORCER_PYTHON:-.venv/bin/python}
ENFORCER=${ENFORCER_BIN:-.venv/bin/enforcer}
WORK=$(mktemp -d /var/tmp/enforcer-bench.XXXXXX)
cleanup() {
    runc --root "$WORK/runc-state" delete -f bench-true >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# A cached Plan, as on any host that ran the policy once. Byte-compile the
# package too: an installed package ships .pyc files, and this environment
# may set PYTHONDONTWRITEBYTECODE.
export ENFORCER_CACHE_DIR="$WORK/cache"
"$PY" -m compileall -q enforcer >/dev/null
"$ENFORCER" run --policy restricted -- /bin/true

# A minimal OCI bundle for runc: busybox as rootfs, /bin/true as the process.
mkdir -p "$WORK/bundle/rootfs/bin"
cp /bin/busybox "$WORK/bundle/rootfs/bin/busybox"
ln -s busybox "$WORK/bundle/rootfs/bin/true"
(cd "$WORK/bundle" && runc spec)
"$PY" - "$WORK/bundle/config.json" <<'PYEOF'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["process"]["terminal"] = False
c["process"]["args"] = ["/bin/true"]
json.dump(c, open(p, "w"))
PYEOF

hyperfine -N --warmup 5 --runs "$RUNS" --export-json "$WORK/raw.json" \
    --export-markdown "$WORK/table.md" \
    -n 'bare /bin/true' '/bin/true' \
    -n 'enforcer run --policy restricted' "$ENFORCER run --policy restricted -- /bin/true" \
    -n 'bwrap (ro /, unshare-all)' 'bwrap --ro-bind / / --dev /dev --proc /proc --unshare-all --die-with-parent /bin/true' \
    -n 'firejail (default profile)' 'firejail --quiet /bin/true' \
    -n 'runc run (busybox bundle)' "runc --root $WORK/runc-state run --bundle $WORK/bundle bench-true"

OUT=bench/results/start-latency.md
{
    echo
    echo "## $(date -u +%Y-%m-%dT%H:%MZ) — $(uname -r), $(nproc) cores, $RUNS runs each"
    echo
    echo 'Command: `sh bench/start_latency.sh '"$RUNS"'`'
    echo
    cat "$WORK/table.md"
    echo
    "$PY" - "$WORK/raw.json" <<'PYEOF'
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    print(f"- {r['command']}: median {r['median'] * 1000:.1f} ms, min {r['min'] * 1000:.1f} ms")
PYEOF
} >> "$OUT"
cp "$WORK/raw.json" bench/results/start-latency.json
tail -n 20 "$OUT"
