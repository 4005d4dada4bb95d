"""The trainer process: data pipeline, training recipe and checkpoints (imports torch)."""
