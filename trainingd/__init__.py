"""trainingd: continuous LoRA/QLoRA fine-tuning of a causal language model from a folder.

Where things are (one subpackage per process or concern; ``tests/test_layout.py`` holds the boundaries):

- the core, flat: ``paths`` (every path of a home: ``Home``), ``atomic_ops`` (atomic files and folders),
  ``config`` (``config.json``, typed), ``errors``, ``jobqueue`` (the only code that moves job folders),
  ``instance`` (lock, pid, init), ``exit_codes`` (``TrainerExit``, ``CliExit`` and the help tables), ``faults``
  (named crash points), ``logs``, ``entry_points`` (running the trainer's tools as their own processes).
- ``contracts/``: every file one process writes and another reads, one module each, schema in its docstring
  (the table is in ``contracts/__init__.py``).
- ``daemon/``: the supervisor (``loop.Daemon.tick`` -> ``reconcile``), intake of inbox/, the trainer process and
  its stop ladder, autogen, evaluation, node.
- ``lifecycle/``: snapshots, rollback, consolidation, approval of locked keys, home guard, presets, retention.
- ``checks/``: the health check (doctor), the invariants (the fault tests' oracle), the memory plan.
- ``models/``: base model names -> folders (``base_model``) and the embedded models' registry (``embedded``).
- ``cli/``: the argparse tree (``main``) and its handlers (controller, queue, lifecycle, validator, formatting).
- ``monitor/``: the read-only web monitor; ``generator/``: the SYLLO puzzle service.
- ``train/``: the trainer process and its tools (evaluate, merge, build_base), the only code that imports torch,
  transformers, peft, datasets, bitsandbytes or accelerate; ``train/recipe.py`` is its loop.

Everything outside ``trainingd.train`` is stdlib-only (plus psutil/watchdog where noted) and never imports torch
or ``trainingd.train``.
"""

__version__ = "0.1.0"
