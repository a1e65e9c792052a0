"""`duetto serve`'s server on a background event loop, for tests.

    with ServerThread(backend, token="t") as server:
        RemoteBackend(address=server.address, token="t")

The backend is a real one (a tiny model); only the process boundary is left out (the
fault tests that kill the server run `python -m app serve` in a subprocess instead).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from app.serve.server import DuplexServer


class ServerThread:
    def __init__(self, backend: Any, *, host: str = "127.0.0.1", token: str | None = None,
                 grace_s: float = 30.0, **kwargs: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = DuplexServer(backend, "tiny", host=host, port=0, token=token,
                                   grace_s=grace_s, **kwargs)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def call(self, coro, timeout: float = 60.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> ServerThread:
        self._thread.start()
        self.port = self.call(self.server.start())
        self.address = f"ws://127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.call(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
