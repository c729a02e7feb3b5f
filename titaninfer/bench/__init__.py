"""Benchmarks: workloads, engine runners (TitanInfer in-process, Hugging Face transformers,
any OpenAI-compatible endpoint), metrics, speed of light, evidence packs, the regression
gate, profiling and the roofline. Entry point: `titaninfer bench ...` (see bench/cli.py).

Nothing here is imported by the engine; the server package is never imported, so the bench
runs on machines without FastAPI.
"""
