"""vLLM-Omni's pure-Python parts, imported without its engine, for tests.

Installed without its dependencies (`make test` puts it in .venv/vllm-omni-client; point
DUETTO_VLLM_OMNI_CLIENT there), its client and its protocol and input code import only
the standard library, numpy, pybase64 and websockets, but the package `__init__` files
on the way import torch and the engine (msgspec, vllm, ...). `packages()` registers
those packages bare (their folders, not their `__init__`), so the modules themselves
import exactly as shipped. Without vllm-omni the calling test is skipped, saying why.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import types

import pytest

ENV = "DUETTO_VLLM_OMNI_CLIENT"


def packages(*names: str) -> None:
    """Register `vllm_omni` and the given subpackages ("engine.duplex", ...) bare."""
    if "vllm_omni" in sys.modules:
        root = next(iter(sys.modules["vllm_omni"].__path__))
    else:
        folder = os.environ.get(ENV)
        if folder and folder not in sys.path:
            sys.path.insert(0, folder)
        spec = importlib.util.find_spec("vllm_omni")
        if spec is None or not spec.submodule_search_locations:
            pytest.skip(f"vllm-omni is not installed: set {ENV} to a folder from "
                        "`pip install --no-deps --target DIR vllm-omni pybase64`")
        root = next(iter(spec.submodule_search_locations))
    wanted = [""]
    for name in names:
        parts = name.split(".")
        wanted += [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for name in dict.fromkeys(wanted):
        full = "vllm_omni" + (f".{name}" if name else "")
        if full in sys.modules:
            continue
        path = os.path.join(root, *name.split(".")) if name else root
        module = types.ModuleType(full)
        module.__path__ = [path]
        module.__spec__ = importlib.machinery.ModuleSpec(full, None, is_package=True)
        module.__spec__.submodule_search_locations = [path]
        sys.modules[full] = module
