"""The OCI runtime shim (`enforcer-runc`): merge a policy into a bundle, then runc.

    main.py          entry point: dispatch on runc's command, exec/run runc
    cmdline.py       split runc's command line, strip the shim's own flags
    config.py        /etc/enforcer/shim.json
    plans.py         policy name -> merge patch (precompiled Plan + cache, or compiler)
    patch.py         Plan -> merge patch (off the hot path)
    merge.py         the merge rules (docs/shim.md), one function per field group
    bundle.py        read / atomically rewrite config.json (and exec process specs)
    record.py        workload registry records, the run-mode record reaper
    runcfeatures.py  what the runc in use supports (`runc features`, cached)
    fastjson.py      JSON via the C accelerator, without importing `json`
    caps.py          capability names <-> numbers
    launcher.py      writes a fast (-IS) launcher script
Everything main.py reaches on the start path is stdlib-only and light.
"""
