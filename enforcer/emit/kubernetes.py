"""Policy -> Kubernetes manifests.

Three documents, in this order:

1. a Pod whose pod- and container-level securityContext, resources,
   and tmpfs volumes carry the policy (replace the image and add your own
   fields; the security part is what matters);
2. a Security Profiles Operator `SeccompProfile` (for clusters running the
   operator, which installs the profile on every node itself);
3. a ConfigMap holding the seccomp profile JSON, for clusters without the
   operator: put it on each node at <kubelet root>/seccomp/profiles/NAME.json
   (the Pod's `localhostProfile` points there).

Kubernetes has no per-pod field for rlimits, pids, swap, io limits,
read-only/masked/inaccessible paths or an isolated network: each such part
of a policy is reported.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from enforcer.emit.common import (Unexpressed, audit_stripped, cap_name,
                                  caps_for_a_runtime_without_ambient, env_set_entries,
                                  landlock_unexpressed, report_container_env_and_user, size_text)
from enforcer.emit.docker import DOCKER_MASKED_PATHS, DOCKER_READONLY_PATHS
from enforcer.emit.oci import oci_seccomp_checked
from enforcer.plan import Plan
from enforcer.policy.model import Policy

SPO_API_VERSION = "security-profiles-operator.x-k8s.io/v1beta1"
PLACEHOLDER_IMAGE = "REPLACE-WITH-YOUR-IMAGE"
# emptyDir medium Memory is a tmpfs mounted with these options.
_EMPTYDIR_OPTIONS = {"rw", "nosuid", "nodev"}


@dataclass
class KubernetesExport:
    pod: dict[str, Any]
    seccomp_profile: dict[str, Any]  # the SPO resource
    configmap: dict[str, Any]
    profile_json: dict[str, Any]  # the Localhost profile itself

    @property
    def profile_filename(self) -> str:
        return f"{self.pod['metadata']['name']}.json"

    def documents(self) -> list[dict[str, Any]]:
        return [self.pod, self.seccomp_profile, self.configmap]

    def to_yaml(self) -> str:
        import yaml  # only when exporting, never on the start path

        text: str = yaml.safe_dump_all(self.documents(), sort_keys=False,
                                       default_flow_style=False)
        return text


def k8s_name(name: str) -> str:
    """A policy name as a DNS-1123 name (no underscores, alphanumeric ends)."""
    out = name.replace("_", "-").strip("-.")
    return out or "enforcer"


def _capabilities(policy: Policy, un: Unexpressed) -> dict[str, Any] | None:
    caps = policy.capabilities
    added = caps_for_a_runtime_without_ambient(policy, un, "Kubernetes")
    if added is not None:
        out: dict[str, Any] = {"drop": ["ALL"]}
        if added:
            out["add"] = [cap_name(c, "") for c in sorted(added)]
        return out
    out = {}
    if caps.drop:
        out["drop"] = [cap_name(c, "") for c in sorted(caps.drop)]
    if caps.add:
        out["add"] = [cap_name(c, "") for c in sorted(caps.add)]
    return out or None


def _limits(policy: Policy, un: Unexpressed) -> dict[str, str]:
    r = policy.resources
    limits: dict[str, str] = {}
    if r.memory_max is not None:
        limits["memory"] = size_text(r.memory_max)
    if r.cpu_quota_us is not None:
        exact = r.cpu_quota_us * 1000 / r.cpu_period_us
        millis = math.ceil(exact)
        limits["cpu"] = f"{millis}m"
        if r.cpu_period_us != 100_000:
            un.add(f"cpu period {r.cpu_period_us}us",
                   "the kubelet uses its node-wide CFS period; the quota ratio is kept")
        elif millis != exact:
            un.add(f"cpu quota {r.cpu_quota_us}us", f"rounded up to {millis}m")
    if r.memory_swap_max is not None:
        un.add("resources.memory.swap", "swap is a node setting in Kubernetes")
    if r.pids_max is not None:
        un.add("resources.pids.max", "the pids limit is a node setting (kubelet podPidsLimit)")
    if r.io_weight is not None or r.io_devices:
        un.add("resources.io", "Kubernetes has no block I/O limits")
    return limits


def _tmpfs_volumes(policy: Policy, un: Unexpressed) -> tuple[list[Any], list[Any]]:
    volumes, mounts = [], []
    for i, t in enumerate(policy.filesystem.tmpfs):
        name = f"tmpfs-{i}"
        empty_dir: dict[str, Any] = {"medium": "Memory"}
        if t.size is not None:
            empty_dir["sizeLimit"] = size_text(t.size)
        volumes.append({"name": name, "emptyDir": empty_dir})
        mounts.append({"name": name, "mountPath": t.path})
        extra = [o for o in t.options if o not in _EMPTYDIR_OPTIONS]
        if extra:
            un.add(f"tmpfs {t.path} options {','.join(extra)}",
                   "an emptyDir is mounted rw,nosuid,nodev only")
        if t.mode not in (0o777, 0o1777):
            un.add(f"tmpfs {t.path} mode {t.mode:o}", "an emptyDir's mode is 0777")
    return volumes, mounts


def _report_filesystem(policy: Policy, un: Unexpressed) -> None:
    fs = policy.filesystem
    for path in fs.read_only_paths:
        if path not in DOCKER_READONLY_PATHS:  # the runtime makes those read-only anyway
            un.add(f"read-only path {path}", "Kubernetes has no per-path read-only setting")
    for path in fs.masked_paths:
        if path not in DOCKER_MASKED_PATHS:
            un.add(f"masked path {path}",
                   "the runtime masks only its built-in /proc and /sys paths (procMount: Default)")
    for path in fs.hidden_paths:
        un.add(f"hidden path {path}", "Kubernetes cannot make a path inaccessible")
    for path in fs.writable_paths:
        un.add(f"writable path {path} under a read-only root",
               "mount a volume there; the image's content is not writable")
    if fs.rootfs:
        un.add(f"filesystem.rootfs {fs.rootfs}", "a container's root is its image")
    for b in fs.bind:
        un.add(f"bind {b.source} -> {b.target}",
               "a host path in a pod is a hostPath volume, which pod security standards "
               "refuse; mount a volume at the target instead")


def _security_context(policy: Policy, plan: Plan | None, un: Unexpressed,
                      profile_path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    pod: dict[str, Any] = {}
    uid = gid = None
    groups: tuple[int, ...] = ()
    if plan is not None and plan.user is not None:
        uid, gid, groups = plan.user.uid, plan.user.gid, plan.user.groups
    elif policy.user is not None:
        uid, gid, groups = policy.user.uid, policy.user.gid, policy.user.groups
        if uid is None or (gid is None and policy.user.group_name):
            un.add("user or group by name", "Kubernetes needs numeric ids; compile first")
    if uid is not None:
        pod["runAsUser"] = uid
        pod["runAsNonRoot"] = uid != 0
    if gid is not None:
        pod["runAsGroup"] = gid
    if groups:
        pod["supplementalGroups"] = list(groups)
    seccomp = {"type": "Localhost", "localhostProfile": profile_path}
    pod["seccompProfile"] = seccomp
    container: dict[str, Any] = {
        "allowPrivilegeEscalation": not policy.no_new_privileges,
        "privileged": False,
        "readOnlyRootFilesystem": policy.filesystem.read_only_root,
        "seccompProfile": dict(seccomp),
    }
    caps = _capabilities(policy, un)
    if caps:
        container["capabilities"] = caps
    return pod, container


def kubernetes_export(policy: Policy, plan: Plan | None = None, machine: str | None = None,
                      image: str = PLACEHOLDER_IMAGE,
                      namespace: str | None = None, with_flags: bool = False,
                      ) -> tuple[KubernetesExport, list[str]]:
    seccomp, seccomp_lines = oci_seccomp_checked(policy, machine, target="kubernetes",
                                                 with_flags=with_flags)
    un = Unexpressed("kubernetes")
    un.lines.extend(seccomp_lines)
    policy = audit_stripped(policy, un)
    landlock_unexpressed(policy, un)
    name = k8s_name(policy.name)
    profile_path = f"profiles/{name}.json"
    pod_sc, container_sc = _security_context(policy, plan, un, profile_path)
    volumes, mounts = _tmpfs_volumes(policy, un)
    limits = _limits(policy, un)
    _report_filesystem(policy, un)
    for r in policy.rlimits:
        un.add(f"rlimit {r.resource}", "Kubernetes has no per-pod resource limits (ulimits)")
    if "net" in policy.namespaces:
        un.add("an isolated network namespace", "every pod has a network; use a NetworkPolicy")
    report_container_env_and_user(policy, un)

    container: dict[str, Any] = {"name": "app", "image": image,
                                 "securityContext": container_sc}
    if limits:
        # requests default to limits when only limits are given.
        container["resources"] = {"limits": limits}
    if mounts:
        container["volumeMounts"] = mounts
    if policy.env.set:
        container["env"] = [{"name": k, "value": v} for k, v in env_set_entries(policy)]
    spec: dict[str, Any] = {"securityContext": pod_sc, "containers": [container]}
    if "user" in policy.namespaces:
        spec["hostUsers"] = False
    if volumes:
        spec["volumes"] = volumes
    metadata: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/name": name},
                                "annotations": {"enforcer/policy": name}}
    if namespace:
        metadata["namespace"] = namespace
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}

    spo_spec = {k: v for k, v in seccomp.items() if k != "defaultErrnoRet"}
    if seccomp.get("defaultErrnoRet", 1) != 1:
        un.add(f"default errno {seccomp['defaultErrnoRet']} in the SeccompProfile resource",
               "the operator's CRD has no defaultErrnoRet; runc then returns EPERM "
               "(the Localhost JSON keeps it)")
    spo_meta: dict[str, Any] = {"name": name}
    if namespace:
        spo_meta["namespace"] = namespace
    spo = {"apiVersion": SPO_API_VERSION, "kind": "SeccompProfile", "metadata": spo_meta,
           "spec": spo_spec}
    cm_meta: dict[str, Any] = {"name": f"{name}-seccomp"}
    if namespace:
        cm_meta["namespace"] = namespace
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": cm_meta,
                 "data": {f"{name}.json": json.dumps(seccomp, indent=2) + "\n"}}
    return KubernetesExport(pod=pod, seccomp_profile=spo, configmap=configmap,
                            profile_json=seccomp), un.lines
