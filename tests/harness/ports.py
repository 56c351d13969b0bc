"""Free TCP ports for servers the tests start, chosen *below* the kernel's ephemeral range.

Asking the kernel for port 0 returns an ephemeral port; between closing it and the server binding
it, any outgoing connection (kubectl, aiohttp, Ray) may take the same port. Ports below the
ephemeral range are never handed out to outgoing connections, so that race cannot happen.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_TAKEN: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    low, high = 10000, max(10001, _ephemeral_low() - 1)
    rng = random.Random()
    for _ in range(200):
        port = rng.randint(low, high)
        if port in _TAKEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _TAKEN.add(port)
        return port
    raise RuntimeError("no free port below the ephemeral range")
