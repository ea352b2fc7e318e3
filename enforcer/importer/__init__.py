"""Importers: other tools' security profiles -> enforcer YAML policies.
docker_seccomp.py reads Docker/OCI seccomp JSON (docs/import.md).
"""
