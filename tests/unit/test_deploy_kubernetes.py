"""deploy/kubernetes: every manifest passes an offline schema validator, and
the monitor's DaemonSet keeps the least privilege it promises.

Core kinds (Namespace, ServiceAccount, ConfigMap, DaemonSet, Service,
RuntimeClass) are validated strictly (unknown fields rejected) with the
kubernetes-validate package against the Kubernetes versions below. The
Prometheus Operator's ServiceMonitor and PrometheusRule are CRDs that
package has no schema for: they are checked against SERVICEMONITOR_SCHEMA
and PROMETHEUSRULE_SCHEMA here, subsets of the Operator's
monitoring.coreos.com/v1 schemas covering the fields we use (unknown fields
rejected there too), and the PrometheusRule's rules by promtool. Any other
kind fails the test.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import yaml  # noqa: E402
from deploy_helpers import (  # noqa: E402
    DEPLOY, K8S, REPO, need, run, shipped_policy_names, temp_dir, yaml_docs,
)

# The oldest Kubernetes we claim (RuntimeClass scheduling, PSA labels) and the newest known.
K8S_VERSIONS = ["1.27.0", kubernetes_validate.utils.latest_version()]
CORE_KINDS = {"Namespace", "ServiceAccount", "ConfigMap", "DaemonSet", "Service", "RuntimeClass"}

_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
_RELABEL = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "sourceLabels": {"type": "array", "items": {"type": "string", "pattern": r"^[a-zA-Z_][a-zA-Z0-9_]*$"}},
        "separator": {"type": "string"}, "targetLabel": {"type": "string"},
        "regex": {"type": "string"}, "modulus": {"type": "integer"}, "replacement": {"type": "string"},
        "action": {"enum": ["replace", "keep", "drop", "hashmod", "labelmap", "labeldrop",
                            "labelkeep", "lowercase", "uppercase", "keepequal", "dropequal"]},
    },
}
_DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?"
                                          r"(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
SERVICEMONITOR_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object", "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "required": ["name", "namespace"], "additionalProperties": False,
                     "properties": {"name": {"type": "string"}, "namespace": {"type": "string"},
                                    "labels": _LABELS, "annotations": _LABELS}},
        "spec": {
            "type": "object", "additionalProperties": False, "required": ["selector", "endpoints"],
            "properties": {
                "jobLabel": {"type": "string"},
                "selector": {"type": "object", "additionalProperties": False,
                             "properties": {"matchLabels": _LABELS, "matchExpressions": {"type": "array"}}},
                "namespaceSelector": {"type": "object", "additionalProperties": False,
                                      "properties": {"any": {"type": "boolean"},
                                                     "matchNames": {"type": "array", "items": {"type": "string"}}}},
                "endpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False,
                    "properties": {
                        "port": {"type": "string"}, "targetPort": {},
                        "path": {"type": "string", "pattern": "^/"},
                        "scheme": {"enum": ["http", "https"]},
                        "interval": _DURATION, "scrapeTimeout": _DURATION,
                        "honorLabels": {"type": "boolean"},
                        "relabelings": {"type": "array", "items": _RELABEL},
                        "metricRelabelings": {"type": "array", "items": _RELABEL},
                        "tlsConfig": {"type": "object"}, "basicAuth": {"type": "object"},
                    }}},
            },
        },
    },
}


_RULE = {
    "type": "object", "additionalProperties": False, "required": ["expr"],
    "oneOf": [{"required": ["record"]}, {"required": ["alert"]}],
    "properties": {
        "record": {"type": "string", "pattern": r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"},
        "alert": {"type": "string", "pattern": r"^[a-zA-Z_][a-zA-Z0-9_]*$"},
        "expr": {"type": "string", "minLength": 1},
        "for": _DURATION, "keep_firing_for": _DURATION,
        "labels": _LABELS, "annotations": _LABELS,
    },
}
PROMETHEUSRULE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object", "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": SERVICEMONITOR_SCHEMA["properties"]["metadata"],
        "spec": {"type": "object", "additionalProperties": False, "required": ["groups"],
                 "properties": {"groups": {"type": "array", "minItems": 1, "items": {
                     "type": "object", "additionalProperties": False, "required": ["name", "rules"],
                     "properties": {"name": {"type": "string"}, "interval": _DURATION,
                                    "rules": {"type": "array", "minItems": 1, "items": _RULE}}}}}},
    },
}
CRD_SCHEMAS = {"ServiceMonitor": SERVICEMONITOR_SCHEMA, "PrometheusRule": PROMETHEUSRULE_SCHEMA}


def manifests() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        for i, doc in enumerate(yaml_docs(path)):
            out.append((f"{path.name}[{i}] {doc.get('kind')}/{doc.get('metadata', {}).get('name')}", doc))
    return out


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for _, d in manifests() if d["kind"] == kind]


def monitor_daemonset() -> dict[str, Any]:
    (ds,) = [d for d in by_kind("DaemonSet") if d["metadata"]["name"] == "enforcer-monitor"]
    return ds


def test_there_are_manifests() -> None:
    kinds = {d["kind"] for _, d in manifests()}
    assert kinds == CORE_KINDS | set(CRD_SCHEMAS), kinds


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("where,doc", manifests(), ids=[m[0] for m in manifests()])
def test_manifest_validates(where: str, doc: dict[str, Any], version: str) -> None:
    if doc["kind"] in CRD_SCHEMAS:
        jsonschema.Draft202012Validator(CRD_SCHEMAS[doc["kind"]]).validate(doc)
        return
    assert doc["kind"] in CORE_KINDS, f"{where}: no schema to check {doc['kind']} against"
    kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_rejects_a_broken_manifest() -> None:
    ds = json.loads(json.dumps(monitor_daemonset()))
    ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilitys"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, K8S_VERSIONS[-1], strict=True)
    sm = json.loads(json.dumps(by_kind("ServiceMonitor")[0]))
    sm["spec"]["endpoints"][0]["intervall"] = "15s"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(SERVICEMONITOR_SCHEMA).validate(sm)
    pr = json.loads(json.dumps(by_kind("PrometheusRule")[0]))
    pr["spec"]["groups"][0]["rules"][-1]["fro"] = "5m"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(PROMETHEUSRULE_SCHEMA).validate(pr)


def test_no_rbac_and_no_token() -> None:
    kinds = {d["kind"] for _, d in manifests()}
    assert not kinds & {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}
    (sa,) = by_kind("ServiceAccount")
    assert sa["automountServiceAccountToken"] is False
    for ds in by_kind("DaemonSet"):
        assert ds["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_monitor_least_privilege() -> None:
    pod = monitor_daemonset()["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["AUDIT_READ"]}
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc.get("privileged", False) is False
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    # hostNetwork for audit multicast, hostPID for attribution; nothing else shared.
    assert pod["hostNetwork"] is True and pod["hostPID"] is True
    assert not pod.get("hostIPC", False)
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    # The registry only, not the rest of /run/enforcer (tests/adversarial/test_monitor_exposure.py).
    assert mounts["/run/enforcer/workloads"]["readOnly"] is True
    assert "/run/enforcer" not in mounts
    assert mounts["/sys/fs/cgroup"]["readOnly"] is True
    assert mounts["/etc/enforcer/tls"]["readOnly"] is True and mounts["/etc/enforcer/auth"]["readOnly"]
    writable = [p for p, m in mounts.items() if not m.get("readOnly")]
    assert writable == ["/var/log/enforcer"], writable
    for key in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][key]), key
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["path"] == "/healthz"
        assert c[probe]["httpGet"]["scheme"] == "HTTPS"


def test_privilege_comments_are_there() -> None:
    """Each privilege carries a comment saying why (the file is the documentation)."""
    text = (K8S / "monitor.yaml").read_text()
    for why in ("hostNetwork:", "hostPID:", "AUDIT_READ:", "Not runAsNonRoot", "RBAC at all"):
        assert why in text, why


def test_one_runtimeclass_per_shipped_policy() -> None:
    names = shipped_policy_names()
    assert names, "no shipped policies"
    rcs = {rc["metadata"]["name"]: rc for rc in by_kind("RuntimeClass")}
    assert sorted(rcs) == [f"enforcer-{n}" for n in names]
    docker = json.loads((DEPLOY / "docker" / "daemon.json").read_text())["runtimes"]
    for name, rc in rcs.items():
        assert rc["handler"] == name
        assert rc["handler"] in docker


def test_policies_configmap_holds_the_policy_files() -> None:
    (cm,) = by_kind("ConfigMap")
    expected = {f"{n}.yaml": (REPO / "policies" / f"{n}.yaml").read_text() for n in shipped_policy_names()}
    assert cm["data"] == expected


def test_generated_files_are_in_sync() -> None:
    r = run([sys.executable, str(DEPLOY / "generate.py"), "--check"])
    assert r.returncode == 0, r.stderr


def test_servicemonitor_selects_the_service() -> None:
    (sm,) = by_kind("ServiceMonitor")
    (svc,) = by_kind("Service")
    assert sm["metadata"]["name"] == "enforcer-monitor" == svc["metadata"]["name"]
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] in {p["name"] for p in svc["spec"]["ports"]}
    pod_labels = monitor_daemonset()["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()


def test_prometheusrule_carries_the_shipped_rules() -> None:
    (pr,) = by_kind("PrometheusRule")
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules" / "enforcer-alerts.yml").read_text())
    assert pr["spec"]["groups"] == rules["groups"]
    with temp_dir("deploy-prule-") as d:
        (d / "rules.yml").write_text(yaml.safe_dump({"groups": pr["spec"]["groups"]}))
        r = run([need("promtool"), "check", "rules", str(d / "rules.yml")])
    assert r.returncode == 0, r.stdout + r.stderr
