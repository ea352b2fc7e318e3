"""The shim passes runc's command line through unchanged, minus its own flags."""

from __future__ import annotations

import json
import os
import re

import pytest

from enforcer import fastjson
from enforcer.kernel.capabilities import name_of
from enforcer.shim.cmdline import parse
from enforcer.shim.config import load_config
from enforcer.shim.errors import ShimError
from tests.shim_helpers import FIXTURE_CONFIG

# What containerd's runc shim (v2) runs for `docker run`, with Docker's runtimeArgs first.
DOCKER_CREATE = ["--policy", "restricted", "--root", "/run/docker/runtime-runc/moby", "--log",
                 "/run/containerd/io.containerd.runtime.v2.task/moby/abc/log.json",
                 "--log-format", "json", "--systemd-cgroup", "create", "--bundle",
                 "/run/containerd/io.containerd.runtime.v2.task/moby/abc", "--pid-file",
                 "/run/containerd/io.containerd.runtime.v2.task/moby/abc/init.pid",
                 "--console-socket", "/tmp/pty.sock", "abc"]


def test_docker_create_line_is_passed_through_without_shim_flags() -> None:
    line = parse(DOCKER_CREATE)
    assert line.runc_args == DOCKER_CREATE[2:]
    assert line.shim == {"policy": "restricted"}
    assert line.command == "create"
    assert line.global_flags["root"] == "/run/docker/runtime-runc/moby"
    flags, positionals = line.command_flags_and_positionals()
    assert flags["bundle"].endswith("moby/abc") and flags["pid-file"].endswith("init.pid")
    assert positionals == ["abc"] and line.container_id == "abc"
    assert line.global_args == DOCKER_CREATE[2:9]


@pytest.mark.parametrize("argv, shim, runc_args", [
    (["--policy=web", "--runc", "/x/runc", "--config=/c.json", "state", "id"],
     {"policy": "web", "runc": "/x/runc", "config": "/c.json"}, ["state", "id"]),
    (["-root=/r", "--debug", "run", "-b", "/b", "-d", "--no-pivot", "id"], {},
     ["-root=/r", "--debug", "run", "-b", "/b", "-d", "--no-pivot", "id"]),
    # after the command, --policy belongs to runc (or to `runc exec`'s process)
    (["exec", "id", "sh", "--policy", "x"], {}, ["exec", "id", "sh", "--policy", "x"]),
    (["--version"], {}, ["--version"]),
])
def test_shim_flags_only_before_the_command(argv, shim, runc_args) -> None:
    line = parse(argv)
    assert line.shim == shim
    assert line.runc_args == runc_args


def test_flags_after_the_container_id_and_short_bundle() -> None:
    line = parse(["run", "myid", "-b=/bundle", "--pid-file", "/p"])
    flags, positionals = line.command_flags_and_positionals()
    assert flags == {"bundle": "/bundle", "pid-file": "/p"} and positionals == ["myid"]


def test_shim_flag_without_value_is_an_error() -> None:
    with pytest.raises(ShimError, match="--policy needs a value"):
        parse(["--policy"])


def test_cap_table_matches_the_kernel_header() -> None:
    header = "/usr/include/linux/capability.h"
    if not os.path.exists(header):
        pytest.skip("linux/capability.h not installed (linux-libc-dev)")
    text = open(header).read()
    kernel = {int(n): name for name, n in re.findall(r"#define\s+(CAP_[A-Z_]+)\s+(\d+)\s*$",
                                                    text, re.M)
              if name not in ("CAP_LAST_CAP",)}
    last = max(kernel)
    assert [kernel[i] for i in range(last + 1)] == [name_of(i) for i in range(last + 1)]


def test_fastjson_matches_json_on_the_docker_config() -> None:
    text = open(FIXTURE_CONFIG).read()
    doc = json.loads(text)
    assert fastjson.loads(text) == doc
    assert fastjson.loads(text.encode()) == doc
    assert fastjson.dumps(doc) == json.dumps(doc)
    assert fastjson.dumps(doc, sort_keys=True) == json.dumps(doc, sort_keys=True)
    assert json.loads(fastjson.dumps({"é": "\u2603", "n": [1, 2.5, None, True]})) == \
        {"é": "\u2603", "n": [1, 2.5, None, True]}
    for bad in ("", "{", "{} x", "NaN", "[1,]", "\ufeff{}"):
        with pytest.raises(ValueError):
            fastjson.loads(bad)


def test_shim_config_is_strict(tmp_path) -> None:
    good = tmp_path / "good.json"
    good.write_text('{"default_policy": "default", "on_no_policy": "passthrough", '
                    '"runc": "/usr/sbin/runc"}')
    cfg = load_config(str(good))
    assert (cfg.default_policy, cfg.on_no_policy, cfg.runc) == \
        ("default", "passthrough", "/usr/sbin/runc")
    for text, message in (('{"on_no_policy": "allow"}', "allowed: refuse, passthrough"),
                          ('{"defualt_policy": "x"}', "unknown key 'defualt_policy'"),
                          ('{"runc": 5}', "runc must be a non-empty string"),
                          ("[", "not valid JSON")):
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(ShimError, match=re.escape(message)):
            load_config(str(bad))
    with pytest.raises(ShimError, match="no such file"):
        load_config(str(tmp_path / "missing.json"))
