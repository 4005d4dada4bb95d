"""The daemon process: stdlib only, never imports torch or ``trainingd.train``.

``loop.py`` is the supervisor (``Daemon.tick`` -> ``reconcile``), ``intake.py`` watches ``inbox/`` (``json_array.py``
converts JSON arrays), ``trainer_process.py`` starts and signals the trainer, ``autogen.py`` asks the generator for
data, ``evaluation.py`` runs the held-out evaluation in its own process, ``node.py`` follows the daemon from another
machine. Run it with ``python -m trainingd.daemon.loop --home DIR`` or ``trainingd daemon``.
"""
