"""Experiments built on the engine: workloads, metrics, reports, the cost model, plots, the bench.

``experiment`` runs a fleet through boot and a workload; ``workloads/`` holds the guest models;
``metrics`` records HDR latencies; ``costs`` is the virtual-time cost model; ``report``,
``tables``, ``plots`` and ``trace`` turn a run into JSON, text, pictures and a Perfetto trace;
``bench/`` is the performance suite; ``commands`` and ``usage`` are the ``tdvsm`` subcommands.
Imports the engine (``runtime``), never ``runtime.sim``, ``runtime.serve`` or ``runtime.cluster``.
"""
