"""The daemon process: stdlib only, never imports torch or ``trainingd.train``.

``loop.py`` is the supervisor (``Daemon.tick`` -> ``reconcile``): ``recovery.py`` settles what the last daemon left
(jobs in processing/, checkpoints, a stale ``.stop``), ``job_start.py`` picks the next job, ``trainer_exit.py`` and
``outcome.py`` turn a trainer's exit into a queue transition, ``control.py`` admits and acknowledges control requests,
``conditions.py`` holds the conditions of the whole home, ``status_view.py`` builds the status document and
``options.py`` the command line. ``intake.py`` watches ``inbox/`` (``json_array.py`` converts JSON arrays),
``trainer_process.py`` starts and signals the trainer (the stop ladder), ``autogen.py`` asks the generator for data,
``evaluation.py`` runs the held-out evaluation in its own process, ``node.py`` follows the daemon from another
machine. Run it with ``python -m trainingd.daemon.loop --home DIR`` or ``trainingd daemon``.
"""
