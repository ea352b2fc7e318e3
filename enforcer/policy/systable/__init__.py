"""The syscall table's data: <arch>.txt and addendum.txt (read by
enforcer/policy/syscall_table.py).

Only the digest lives here. It imports nothing, so the Plan cache key
(enforcer/planstore.py) includes it on `enforcer run`'s start path
without reading a table: a regenerated table or a new addendum entry is
never served from an old cache entry. tests/unit/test_systable.py checks it
is the sha256 of the data files (syscall_table.digest()).
"""

TABLE_DIGEST = "258f4af5771078e51ba93463ea5d2c7d0950adaaa69ba5e2ed3603f61ecff03f"
