"""The command lines: ``main.py`` holds the one argparse tree of ``trainingd``, built from ``tree.py``'s blocks;
``home.py`` (init, start, logs, plan), ``services.py`` (monitor, generator, node), ``processes.py`` (daemon, train,
consolidate, eval) and ``lifecycle.py`` add their leaves to it; ``controller.py``, ``queue.py`` and ``validator.py``
are handlers, which return dicts; ``formatting.py`` prints them as text."""
