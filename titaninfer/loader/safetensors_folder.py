"""Hugging Face checkpoint folders: config.json and (sharded) *.safetensors."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import torch

from titaninfer.loader.progress import progress


def read_hf_config(folder: str) -> dict:
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        raise ValueError(f"{folder} has no config.json; is it a Hugging Face model folder?")
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from None


def safetensors_files(folder: str) -> list[str]:
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index) as f:
            names = sorted(set(json.load(f)["weight_map"].values()))
    else:
        names = sorted(n for n in os.listdir(folder) if n.endswith(".safetensors"))
    if not names:
        raise ValueError(f"{folder} holds no .safetensors weights")
    files = [os.path.join(folder, n) for n in names]
    for p in files:
        if not os.path.isfile(p):
            raise ValueError(f"weight shard {p} listed in the index is missing")
    return files


def iter_safetensors(files: list[str], device: str = "cpu") -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, tensor) one at a time so peak host memory stays near one tensor."""
    from safetensors import safe_open

    total = sum(os.path.getsize(p) for p in files)
    with progress(total, "loading weights") as bar:
        for path in files:
            with safe_open(path, framework="pt", device=device) as f:
                for name in f.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                    t = f.get_tensor(name)
                    yield name, t
                    bar.update(t.numel() * t.element_size())
