"""vLLM-Omni's own duplex client holds a conversation with `duetto serve` (tiny Moshi).

The client library is `vllm_omni.clients.duplex` from the vllm-omni package. Installed
without its engine (`pip install --no-deps --target DIR vllm-omni pybase64`), the
module itself needs only the standard library, pybase64 and websockets, but importing it
as `vllm_omni.clients.duplex` first runs the package's `__init__`, which imports torch
and then the engine's own dependencies (aenum, vllm, ...). So this test registers a
bare `vllm_omni` package pointing at the installed folder, which skips that `__init__`
and imports the client exactly as shipped. Point DUETTO_VLLM_OMNI_CLIENT at the folder;
without it (or an installed vllm-omni) the test is skipped and says why.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
import types

import numpy as np
import pytest
import tiny_models
from duplex_server import ServerThread

from app.model.contract import ModelSource, Quant
from app.model.moshi.backend import MoshiBackend
from app.model.remote import wire

moshi_tiny_factory = tiny_models.moshi_tiny_factory

pytestmark = pytest.mark.slow

ENV = "DUETTO_VLLM_OMNI_CLIENT"


def _duplex_client_module():
    folder = os.environ.get(ENV)
    if folder:
        sys.path.insert(0, folder)
    spec = importlib.util.find_spec("vllm_omni")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"vllm-omni is not installed: set {ENV} to a folder from "
                    "`pip install --no-deps --target DIR vllm-omni pybase64`")
    if "vllm_omni" not in sys.modules:
        bare = types.ModuleType("vllm_omni")  # its __init__ would import the engine
        bare.__path__ = list(spec.submodule_search_locations)
        sys.modules["vllm_omni"] = bare
    from vllm_omni.clients import duplex

    return duplex


@pytest.fixture(scope="module")
def moshi(moshi_tiny_factory) -> MoshiBackend:
    backend = MoshiBackend(device="cpu")
    backend.load(ModelSource(local_dir=moshi_tiny_factory()), Quant.BF16, lambda *_: None)
    yield backend
    backend.close()


def test_vllm_omni_duplex_client_talks_to_duetto_serve(moshi):
    duplex = _duplex_client_module()
    token = "s3cret"

    async def connect(url: str):
        from websockets.asyncio.client import connect as ws_connect

        return await ws_connect(url, additional_headers=wire.auth_headers(token))

    rng = np.random.default_rng(0)
    pcm = wire.pcm16_bytes(0.1 * rng.standard_normal(16000).astype(np.float32))

    async def conversation(address: str) -> dict:
        client = duplex.DuplexClient(address, model="tiny", reconnect=None,
                                     heartbeat_interval_s=None, connect=connect)
        async with client:
            found = {"session": client.session_id,
                     "capabilities": client.session_info.get("capabilities")}
            collector = duplex.EventCollector()
            consume = asyncio.create_task(collector.consume(client))
            await client.stream_pcm(pcm, chunk_ms=80, realtime=False)
            chunks = []
            async for response in client.responses():
                if response.decision == "listen":
                    continue
                found["decision"] = response.decision
                async for chunk in response.audio():
                    chunks.append(chunk)
                    await client.ack_playback(response.played_ms,
                                              response_id=response.response_id)
                    if len(chunks) == 3:
                        break
                found["response"] = response.response_id
                break
            found["audio_bytes"] = sum(map(len, chunks))
            await duplex.wait_for_condition(
                lambda: collector.count("playback.acknowledged") >= 3, timeout_s=10,
                label="playback acknowledged")
            await client.cancel_response()  # the client's barge-in
            await duplex.wait_for_condition(
                lambda: any(e.get("type") == "response.done"
                            and e["response"]["status"] == "cancelled"
                            for e in collector.events), timeout_s=10, label="cancelled")
            found["acked"] = [e["event"]["played_ms"] for e in collector.events
                              if e.get("type") == "playback.acknowledged"]
            found["cleared"] = collector.count("output_audio_buffer.cleared")
            consume.cancel()
        return found

    with ServerThread(moshi, token=token) as server:
        found = asyncio.run(conversation(server.address))
    assert found["session"]
    assert found["capabilities"]["implementation_level"] == "model_native_duplex"
    assert found["decision"] == "speak"
    assert found["audio_bytes"] == 3 * 1920 * 2  # three 80 ms chunks of 24 kHz PCM16
    assert found["acked"][:3] == [80, 160, 240]
    assert found["cleared"] == 1
