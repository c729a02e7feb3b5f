"""Bench engines: `titaninfer` (in process), `hf` / `hf-generate` (Hugging Face transformers on
the same weights) and `openai` (any OpenAI-compatible endpoint). Each returns an `EngineRun`
(engines/base.py); heavy dependencies are imported only by the engine that needs them."""
