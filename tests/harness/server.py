"""Run the emulator on 127.0.0.1 in a background thread, with a kubeconfig for clients.

kopf (in a subprocess) and kubectl talk to it over real HTTP; tests reach the
store directly through ``call`` for assertions and for the cluster stand-in.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kmock import Server

from tests.harness.emulator import Emulator

T = TypeVar("T")


class EmulatorServer:
    def __init__(self, **emulator_options: Any) -> None:
        """``emulator_options`` go to :class:`Emulator` (e.g. ``history_size``)."""
        self.options = emulator_options
        self.loop = asyncio.new_event_loop()
        self.emulator: Emulator | None = None
        self.url = ""
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="k8s-emulator", daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with Emulator(**self.options) as emulator, Server(emulator) as server:
            self.emulator = emulator
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()
            emulator.shutdown()
            await asyncio.sleep(0.2)

    def start(self) -> EmulatorServer:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise RuntimeError("emulator failed to start") from self._error
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run ``coro`` on the emulator's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def write_kubeconfig(self, path: Path) -> Path:
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "emulator-token"}}],
            "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "tester",
                                                          "namespace": "default"}}],
            "current-context": "emulator",
        }
        path.write_text(yaml.safe_dump(cfg))
        return path
