"""The Ray backend: an experiment's cells sharded over Ray actors, each hosting a whole runtime.

The only part of tdvsm that imports ``ray`` (the optional extra ``ray``): ``safety`` (which
clusters tdvsm agrees to use, RELIABILITY.md F7) needs no Ray; ``shard`` is a shard's body,
``coordinator`` runs an experiment over shard actors and merges their results (``wire``),
``run`` is what ``tdvsm run --backend ray`` calls, and ``bench`` measures P6.
"""
