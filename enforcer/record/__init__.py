"""`enforcer record`: learn a policy from what a workload does.

    recorder.py   run the workload under a log-everything filter, in a fresh
                  audit session, through the ordinary `enforcer run` path
    collector.py  read that session's seccomp records from the audit
                  multicast stream; fail closed if any could be lost
    learn.py      seen syscalls + base policy -> what the learned policy allows
    render.py     the learned policy as commented, reviewable YAML
    merge.py      the union of several recordings

docs/record.md describes the loop record -> review -> audit -> enforce.
"""
