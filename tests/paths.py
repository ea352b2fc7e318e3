"""Where the tests find the project's shared inputs.

`shared/` sits beside the checkout (in CI: a copy beside the fresh clone),
so it is found relative to this file, never by a machine-specific path.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED_FIXTURES = REPO.parent / "shared" / "fixtures"
# Copies of the published profiles, with their source and licence:
# tests/fixtures/seccomp/README.md.
SECCOMP_FIXTURES = REPO / "tests" / "fixtures" / "seccomp"
DOCKER_DEFAULT_SECCOMP = SECCOMP_FIXTURES / "docker-default.json"
CONTAINERS_COMMON_SECCOMP = SECCOMP_FIXTURES / "containers-common.json"
DOCKER_OCI_CONFIG = SHARED_FIXTURES / "docker-20.10-oci-config.json"
SHARED_THIRD_PARTY = REPO.parent / "shared" / "third_party"
# The OCI runtime-tools validation suite, with its Go dependencies vendored.
RUNTIME_TOOLS_TARBALL = SHARED_THIRD_PARTY / "runtime-tools-0105384.tar.gz"
# The Kubernetes CRI API, for field numbers (tests/e2e/cri/ holds our subset).
CRI_API_PROTO = SHARED_FIXTURES / "cri-api-v1.proto"
