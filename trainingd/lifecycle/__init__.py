"""The adapter's life past one job: snapshots and rollback, consolidation into a new base, approval of a
consolidated base, the locked-key guard of a home, presets and retention. Stdlib only; the one step that needs
torch (the merge) runs in ``trainingd.train.merge``."""
