"""Base models by name: ``base_model.py`` resolves what ``base_model`` names to a folder, ``embedded.py`` is the
registry of models built locally (their builders, which need torch, live in ``trainingd.train``)."""
