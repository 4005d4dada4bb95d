"""trainingd: continuous LoRA/QLoRA fine-tuning of a causal language model from a folder.

The daemon side (queue, control, status, daemon) is stdlib-only and never imports torch;
everything under ``trainingd.train`` is the trainer process.
"""

__version__ = "0.1.0"
