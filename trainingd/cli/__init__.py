"""The command lines: ``main.py`` holds the one argparse tree of ``trainingd``; ``controller.py``, ``queue.py``,
``lifecycle.py`` and ``validator.py`` are its handlers, which return dicts; ``formatting.py`` prints them as text."""
