"""trainingd: continuous LoRA/QLoRA fine-tuning of a causal language model from a folder.

Where things are:

- ``contracts/``: every file one process writes and another reads, one module each, schema in its docstring
  (job, requests, trainer_command, progress, status, result, adapter_state, manifest, trainer_record).
- ``daemon.py``: the supervisor loop (``Daemon.tick`` and ``reconcile``); ``jobqueue.py`` moves job folders;
  ``trainer_process.py`` starts and signals the trainer (``TrainerProcess``); ``intake.py`` watches inbox/.
- ``train/``: the trainer process; ``train/recipe.py`` is its loop (``Recipe.train``), ``train/commands.py``
  what it obeys, ``train/__main__.py`` its entry points.
- ``cli.py`` (one argparse tree), ``controller.py`` and ``queue_cli.py`` (its handlers), ``paths.py`` (a home).

The daemon side is stdlib-only and never imports torch; everything under ``trainingd.train`` is the trainer
process.
"""

__version__ = "0.1.0"
