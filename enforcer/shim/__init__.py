"""The OCI runtime shim (`enforcer-runc`): merge a policy into a bundle, then runc.

    main.py          the shim's decisions: dispatch on runc's command
    runner.py        who executes runc: this process (LocalRunner) or, under
                     enforcer-shimd, the compiled front end (server.RemoteRunner)
    server.py        enforcer-shimd: the shim kept resident for the front end
    frontend/        enforcer-runc.c, the compiled front end, and its build
    cmdline.py       split runc's command line, strip the shim's own flags
    config.py        /etc/enforcer/shim.json
    plans.py         policy name -> merge patch (precompiled Plan + cache, or compiler)
    patch.py         Plan -> merge patch (off the hot path)
    merge.py         the merge rules (docs/shim.md), one function per field group
    bundle.py        read / atomically rewrite config.json (and exec process specs)
    record.py        workload registry records, the run-mode record reaper
    runcfeatures.py  what the runc in use supports (`runc features`, cached)
    launcher.py      writes a fast (-IS) launcher script for the Python shim
Everything main.py reaches on the start path is stdlib-only and light.

What a node registers as the runtime is the compiled front end
(`enforcer-runc`): with enforcer-shimd running it adds a few ms to a
container start; without it, it runs the Python shim (`enforcer-runc-py`),
which makes the same decisions from a fresh interpreter (docs/shim.md).
"""
