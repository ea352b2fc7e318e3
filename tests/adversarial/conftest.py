"""Attacks on enforcer's trust boundaries, performed as an attacker would.

One test (or one small group of tests) per hole listed in docs/security.md:
each builds what the attacker controls (an image's rootfs, a config.json or
annotation, a workload running as root or not, an unprivileged local user),
runs the real thing (runc, dockerd, enforcer-shimd, `enforcer run`), asserts
that the attack fails, and asserts that nothing on the host changed.

Every test here was run against the code before the fix and failed there;
docs/security.md names the test for each hole.
"""
