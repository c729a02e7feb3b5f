"""Turn a model spec into a ready model (+ tokenizer when the checkpoint carries one).

Specs: a Hugging Face folder (config.json + safetensors), a `.gguf` file,
`dummy:<shape>` (random weights, see dummy.py), or nothing (the embedded SmolLM2).
"""

from titaninfer.loader.model_loader import LoadedModel, load_model, resolve_model_spec

__all__ = ["LoadedModel", "load_model", "resolve_model_spec"]
