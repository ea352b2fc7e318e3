"""Bad bundles: one clear line on stderr, non-zero exit, runc never started,
config.json byte for byte unchanged. Plus policy selection and pass-through,
observed through what the shim hands to a recording fake runc."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from enforcer.plan import CapabilityPlan, CgroupPlan, UserPlan
from tests.shim_helpers import (
    PYTHON,
    REPO,
    FIXTURE_CONFIG,
    applied_policy,
    fake_runc,
    make_plan,
    run_shim,
    write_plan,
)

# Every test here runs through both front ends (tests/shim_fixtures.py).
pytestmark = pytest.mark.usefixtures("shim_front_end")


@pytest.fixture
def env(tmp_path):
    """A bundle with the docker fixture config, a fake runc, plans, a shim config."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    shutil.copy(FIXTURE_CONFIG, bundle / "config.json")
    os.chmod(bundle / "config.json", 0o640)
    plans = tmp_path / "plans"
    plans.mkdir()
    write_plan(str(plans / "handmade.json"), make_plan())
    write_plan(str(plans / "other.json"), make_plan(policy_name="other"))
    marker = tmp_path / "runc-was-started"
    runc = fake_runc(str(tmp_path / "fake-runc"), str(marker))
    shim_config = tmp_path / "shim.json"
    shim_config.write_text(json.dumps({"plans_dir": str(plans), "runc": runc}))
    return {
        "bundle": bundle, "marker": marker, "runc": runc, "tmp": tmp_path,
        "env": {"ENFORCER_SHIM_CONFIG": str(shim_config),
                "ENFORCER_RUNTIME_DIR": str(tmp_path / "run"),
                "ENFORCER_CACHE_DIR": str(tmp_path / "cache")},
    }


def _create(env, *shim_args: str, bundle=None) -> subprocess.CompletedProcess[str]:
    return run_shim([*shim_args, "create", "--bundle", str(bundle or env["bundle"]), "c1"],
                    env=env["env"])


def _assert_refused(env, result, message: str, before: bytes | None) -> None:
    assert result.returncode == 125, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("enforcer-runc: "), result.stderr
    assert message in lines[0]
    assert not env["marker"].exists(), "runc was started"
    config = env["bundle"] / "config.json"
    if before is not None:
        assert config.read_bytes() == before
    assert not os.listdir(env["tmp"] / "run" / "workloads") \
        if (env["tmp"] / "run" / "workloads").exists() else True


def test_no_config_json(env) -> None:
    os.unlink(env["bundle"] / "config.json")
    r = _create(env, "--policy", "handmade")
    _assert_refused(env, r, "no config.json", None)
    assert not (env["bundle"] / "config.json").exists()


def test_invalid_json(env) -> None:
    (env["bundle"] / "config.json").write_bytes(b'{"ociVersion": "1.0.2",')
    before = (env["bundle"] / "config.json").read_bytes()
    _assert_refused(env, _create(env, "--policy", "handmade"), "not valid JSON", before)


@pytest.mark.parametrize("version", ["2.0.0", "0.9", None])
def test_unknown_oci_version(env, version) -> None:
    config = json.loads((env["bundle"] / "config.json").read_text())
    if version is None:
        del config["ociVersion"]
    else:
        config["ociVersion"] = version
    (env["bundle"] / "config.json").write_text(json.dumps(config))
    before = (env["bundle"] / "config.json").read_bytes()
    _assert_refused(env, _create(env, "--policy", "handmade"),
                    "expected 1.x", before)


def test_unknown_policy(env) -> None:
    before = (env["bundle"] / "config.json").read_bytes()
    r = _create(env, "--policy", "no-such-policy")
    _assert_refused(env, r, "no-such-policy", before)


def test_corrupt_plan_file(env) -> None:
    plan = env["tmp"] / "plans" / "handmade.json"
    plan.write_text(plan.read_text().replace('"policy_name":"handmade"', '"policy_name":"x"'))
    before = (env["bundle"] / "config.json").read_bytes()
    _assert_refused(env, _create(env, "--policy", "handmade"), "does not match its sha256",
                    before)


@pytest.mark.root
def test_unwritable_bundle(env) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to make a read-only bind mount")
    bundle = str(env["bundle"])
    before = (env["bundle"] / "config.json").read_bytes()
    subprocess.run(["mount", "--bind", bundle, bundle], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", bundle], check=True)
        r = _create(env, "--policy", "handmade")
    finally:
        subprocess.run(["umount", bundle], check=True)
    _assert_refused(env, r, "cannot write config.json: Read-only file system", before)


def test_runc_that_cannot_execute_is_one_line_and_no_record(env) -> None:
    """runc passes the shim's checks (a file, executable) but exec fails: the
    shim (or the front end, which spawns it) reports it; no record stays."""
    broken = env["tmp"] / "broken-runc"
    broken.write_text("#!/nonexistent/interpreter\n")
    broken.chmod(0o755)
    config = json.loads(open(env["env"]["ENFORCER_SHIM_CONFIG"]).read())
    config["runc"] = str(broken)
    with open(env["env"]["ENFORCER_SHIM_CONFIG"], "w") as f:
        json.dump(config, f)
    r = _create(env, "--policy", "handmade")
    assert r.returncode == 125
    assert r.stderr.splitlines() == [f"enforcer-runc: cannot execute {broken}: "
                                     "No such file or directory"], r.stderr
    workloads = env["tmp"] / "run" / "workloads"
    assert not workloads.exists() or os.listdir(workloads) == []


@pytest.mark.parametrize("command", [["create", "--pid-file", "PIDFILE"], ["run"]])
def test_no_descriptor_of_the_shim_reaches_runc(env, command) -> None:
    """runc (and so the container) gets stdio and nothing else of ours: not
    the front end's socket, not a file the shim read or wrote."""
    fds_file = env["tmp"] / "runc-fds"
    spy = env["tmp"] / "fd-spy-runc"
    spy.write_text(f"#!{PYTHON} -IS\n"
                   "import json, os\n"
                   "fds = {}\n"
                   "for fd in os.listdir('/proc/self/fd'):\n"
                   "    try:\n"
                   "        fds[fd] = os.readlink(f'/proc/self/fd/{fd}')\n"
                   "    except OSError:\n"
                   "        pass  # listdir's own descriptor, closed again\n"
                   f"open({str(fds_file)!r}, 'w').write(json.dumps(fds))\n")
    spy.chmod(0o755)
    config = json.loads(open(env["env"]["ENFORCER_SHIM_CONFIG"]).read())
    config["runc"] = str(spy)
    with open(env["env"]["ENFORCER_SHIM_CONFIG"], "w") as f:
        json.dump(config, f)
    args = [a.replace("PIDFILE", str(env["tmp"] / "pid")) for a in command]
    (env["tmp"] / "pid").write_text(str(os.getpid()))
    r = run_shim(["--policy", "handmade", *args, "--bundle", str(env["bundle"]), "c1"],
                 env=env["env"], stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    fds = json.loads(fds_file.read_text())
    assert {"0", "1", "2"} <= set(fds)
    assert {fd: target for fd, target in fds.items() if fd not in ("0", "1", "2")} == {}


def test_no_policy_is_refused_by_default(env) -> None:
    before = (env["bundle"] / "config.json").read_bytes()
    _assert_refused(env, _create(env), "no policy selected", before)


def test_shim_flags_are_stripped_and_the_rest_passed_through(env) -> None:
    r = run_shim(["--policy", "handmade", "--root", "/run/x", "--log-format", "json",
                  "create", "-b", str(env["bundle"]), "--pid-file", "/nonexistent/pid",
                  "--console-socket", "/tmp/sock", "c1"], env=env["env"])
    assert r.returncode == 0, r.stderr
    assert env["marker"].read_text().splitlines() == [
        "--root", "/run/x", "--log-format", "json", "create", "-b", str(env["bundle"]),
        "--pid-file", "/nonexistent/pid", "--console-socket", "/tmp/sock", "c1"]
    assert applied_policy(env["tmp"] / "run", "c1").startswith("handmade@")
    assert oct(os.stat(env["bundle"] / "config.json").st_mode & 0o777) == "0o640"
    assert [n for n in os.listdir(env["bundle"]) if n.startswith(".")] == []


@pytest.mark.parametrize("shim_args, annotation, default, expected", [
    # The runtime's own policy cannot be replaced by an annotation: refused.
    (["--policy", "handmade"], "other", "other", None),
    (["--policy", "handmade"], "handmade", "other", "handmade"),
    ([], "other", "handmade", "other"),
    ([], None, "handmade", "handmade"),
])
def test_policy_selection_order(env, shim_args, annotation, default, expected) -> None:
    config = json.loads((env["bundle"] / "config.json").read_text())
    if annotation:
        config.setdefault("annotations", {})["io.enforcer.policy"] = annotation
    (env["bundle"] / "config.json").write_text(json.dumps(config))
    cfg = json.loads(open(env["env"]["ENFORCER_SHIM_CONFIG"]).read())
    cfg["default_policy"] = default
    open(env["env"]["ENFORCER_SHIM_CONFIG"], "w").write(json.dumps(cfg))
    before = (env["bundle"] / "config.json").read_bytes()
    r = _create(env, *shim_args)
    if expected is None:
        _assert_refused(env, r, "cannot change it", before)
        return
    assert r.returncode == 0, r.stderr
    assert applied_policy(env["tmp"] / "run", "c1").startswith(expected + "@")


def test_passthrough_warns_and_registers(env) -> None:
    cfg = json.loads(open(env["env"]["ENFORCER_SHIM_CONFIG"]).read())
    cfg["on_no_policy"] = "passthrough"
    open(env["env"]["ENFORCER_SHIM_CONFIG"], "w").write(json.dumps(cfg))
    before = (env["bundle"] / "config.json").read_bytes()
    r = _create(env)
    assert r.returncode == 0
    assert "starts WITHOUT a policy" in r.stderr
    assert (env["bundle"] / "config.json").read_bytes() == before
    record = json.loads((env["tmp"] / "run" / "workloads" / "c1.json").read_text())
    assert (record["policy"], record["mode"]) == ("_none", "passthrough")


def test_other_commands_exec_runc_untouched(env) -> None:
    before = (env["bundle"] / "config.json").read_bytes()
    r = run_shim(["--policy", "handmade", "kill", "c1", "KILL"], env=env["env"])
    assert r.returncode == 0
    assert env["marker"].read_text().splitlines() == ["kill", "c1", "KILL"]
    assert (env["bundle"] / "config.json").read_bytes() == before


def test_runc_that_is_the_shim_itself_is_refused(env, tmp_path) -> None:
    r = run_shim(["state", "x"], env={**env["env"], "ENFORCER_SHIM_ACTIVE": "1"})
    assert r.returncode == 125 and "started by itself" in r.stderr
    assert not env["marker"].exists()


def test_plan_file_patch_is_cached_and_invalidated(env) -> None:
    assert _create(env, "--policy", "handmade").returncode == 0
    cache = env["tmp"] / "run" / "shim-cache"
    entries = [p for p in os.listdir(cache) if p not in ("runc-features.json", "seccomp")]
    assert len(entries) == 1
    assert oct(os.stat(cache).st_mode & 0o777) == "0o700"
    # the intersection of the container's seccomp profile and the policy's
    assert len(os.listdir(cache / "seccomp")) == 1
    # a changed Plan (same name) must not be served from the cache
    write_plan(str(env["tmp"] / "plans" / "handmade.json"),
               make_plan(no_new_privileges=True, policy_hash="cd" * 32))
    shutil.copy(FIXTURE_CONFIG, env["bundle"] / "config.json")
    assert _create(env, "--policy", "handmade").returncode == 0
    assert applied_policy(env["tmp"] / "run", "c1") == "handmade@" + "cd" * 8


def test_exec_into_a_policy_container_gets_the_policy(env) -> None:
    write_plan(str(env["tmp"] / "plans" / "handmade.json"),
               make_plan(user=UserPlan(uid=65534, gid=65534, groups=()),
                         capabilities=CapabilityPlan(bounding=0, effective=0, permitted=0,
                                                     inheritable=0, ambient=0)))
    assert _create(env, "--policy", "handmade").returncode == 0
    # what Docker hands to `runc exec --process`: root, Docker's capabilities
    process = json.load(open(FIXTURE_CONFIG))["process"]
    process_file = env["tmp"] / "process.json"
    process_file.write_text(json.dumps(process))
    r = run_shim(["exec", "--process", str(process_file), "--detach", "c1"], env=env["env"])
    assert r.returncode == 0, r.stderr
    merged = json.loads(process_file.read_text())
    assert merged["user"] == {"uid": 65534, "gid": 65534, "additionalGids": []}
    assert merged["capabilities"]["bounding"] == [] and merged["noNewPrivileges"] is True
    assert env["marker"].read_text().splitlines()[:2] == ["exec", "--process"]
    env["marker"].unlink()
    for args, message in ((["--cap", "CAP_SYS_ADMIN"], "cannot add capabilities"),
                          (["-u", "0:0"], "exec --user 0:0 is refused")):
        r = run_shim(["exec", *args, "c1", "sh"], env=env["env"])
        assert r.returncode == 125 and message in r.stderr, r.stderr
        assert not env["marker"].exists()
    # a container the shim did not start: untouched pass-through
    r = run_shim(["exec", "--cap", "CAP_SYS_ADMIN", "other", "sh"], env=env["env"])
    assert r.returncode == 0 and env["marker"].exists()


def test_start_path_imports_nothing_heavy(env) -> None:
    """With a precompiled Plan (second start: the patch is cached), the shim
    reaches exec without PyYAML, libseccomp, psutil, prometheus_client, nor
    json/typing/dataclasses (each several ms)."""
    assert _create(env, "--policy", "handmade").returncode == 0  # fills the cache
    shutil.copy(FIXTURE_CONFIG, env["bundle"] / "config.json")
    modules_file = env["tmp"] / "modules.txt"
    code = (
        f"import sys, os; sys.path.insert(0, {REPO!r})\n"
        "def fake_exec(path, argv):\n"
        f"    open({str(modules_file)!r}, 'w').write('\\n'.join(sorted(sys.modules)))\n"
        "    os._exit(0)\n"
        "os.execv = fake_exec\n"
        "from enforcer.shim.main import main\n"
        "sys.exit(main())\n")
    r = subprocess.run([PYTHON, "-IS", "-c", code, "--policy", "handmade", "run", "-b",
                        str(env["bundle"]), "c1"],
                       env={**os.environ, **env["env"]}, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    loaded = set(modules_file.read_text().split())
    assert "enforcer.shim.merge" in loaded  # it did merge
    # enforcer.registry is allowed: it is stdlib-light now (os, time,
    # enforcer.fastjson; 0.2 ms) and the shim writes its records through it.
    # What it must not pull in is checked here with the rest.
    heavy = {"yaml", "pyseccomp", "seccomp", "psutil", "prometheus_client", "json", "typing",
             "dataclasses", "enforcer.plan", "enforcer.errors", "argparse", "tempfile",
             "subprocess", "signal", "re"}
    assert loaded & heavy == set()


def test_enforcer_shim_verb_is_the_same_shim(env) -> None:
    enforcer = os.path.join(REPO, ".venv", "bin", "enforcer")
    pid_file = str(env["tmp"] / "pid")  # the fake runc writes none: no `runc state` either
    r = subprocess.run([enforcer, "shim", "--policy", "handmade", "create", "-b",
                        str(env["bundle"]), "--pid-file", pid_file, "c1"],
                       env={**os.environ, **env["env"]}, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert env["marker"].read_text().splitlines() == ["create", "-b", str(env["bundle"]),
                                                      "--pid-file", pid_file, "c1"]
    assert applied_policy(env["tmp"] / "run", "c1").startswith("handmade@")
    r = subprocess.run([enforcer, "shim", "--policy", "nope", "create", "-b",
                        str(env["tmp"] / "missing"), "c2"], env={**os.environ, **env["env"]},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 125 and r.stderr.strip().endswith("no config.json")


def test_update_cannot_raise_a_limit_above_the_policy(env) -> None:
    write_plan(str(env["tmp"] / "plans" / "handmade.json"),
               make_plan(cgroup=CgroupPlan(memory_max=256 << 20, pids_max=64,
                                           cpu_quota_us=50000, cpu_period_us=100000)))
    assert _create(env, "--policy", "handmade").returncode == 0
    env["marker"].unlink()
    resources = env["tmp"] / "res.json"
    for args, message in (
            (["--memory", "1g"], "memory 1073741824"),
            (["--memory", "-1"], "memory unlimited"),
            (["--pids-limit", "100"], "pids 100"),
            (["--cpu-quota", "80000", "--cpu-period", "100000"], "cpu quota 80000/100000"),
            (["--cpu-quota", "30000", "--cpu-period", "50000"], "cpu quota 30000/50000"),
            # a quota alone keeps the container's period, which the shim must
            # read from its cgroup (this fake runc made none): refused
            (["--cpu-quota", "20000"], "cpu quota 20000 without a period"),
            (["--cpu-period", "1000"], "cpu quota unlimited"),
            (["-r", str(resources)], "memory 536870912")):
        resources.write_text(json.dumps({"memory": {"limit": 512 << 20}}))
        r = run_shim(["update", *args, "c1"], env=env["env"])
        assert r.returncode == 125 and message in r.stderr, (args, r.stderr)
        assert not env["marker"].exists()
    r = run_shim(["update", "--memory", "128m", "--pids-limit", "32", "--cpu-quota", "20000",
                  "--cpu-period", "100000", "c1"], env=env["env"])
    assert r.returncode == 0, r.stderr
    assert env["marker"].read_text().splitlines() == [
        "update", "--memory", "128m", "--pids-limit", "32", "--cpu-quota", "20000",
        "--cpu-period", "100000", "c1"]


def test_fast_launcher_runs_the_shim_without_site(env) -> None:
    launcher = str(env["tmp"] / "enforcer-runc")
    subprocess.run([PYTHON, "-m", "enforcer.shim.launcher", launcher], check=True,
                   capture_output=True, cwd=REPO)
    first_line = open(launcher).readline()
    assert first_line.startswith("#!") and first_line.rstrip().endswith(" -IS")
    r = subprocess.run([launcher, "--policy", "handmade", "create", "-b", str(env["bundle"]),
                        "--pid-file", str(env["tmp"] / "pid"), "c1"],
                       env={**os.environ, **env["env"]}, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert env["marker"].read_text().splitlines()[0] == "create"
