"""Exporters: a validated Policy (and its compiled Plan) in the formats other
tools read -- OCI config.json (oci.py), Docker (docker.py), Kubernetes
(kubernetes.py), systemd (systemd.py). Each returns (output, lines) where
`lines` say, one each, what the target cannot express (docs/export.md).
"""
