"""Checks of a home: ``health.py`` (the doctor, each problem with its fix), ``invariants.py`` (the queue's and the
adapter's invariants, the fault tests' oracle) and ``memory_plan.py`` (a run's peak memory before it starts)."""
