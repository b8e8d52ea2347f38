"""A fast check for whether a model hub can be reached (avoids minutes of download retries offline)."""

from __future__ import annotations

import socket


def reachable(host: str, port: int = 443, timeout_s: float = 3.0) -> bool:
    """True when a TCP connection to ``host:port`` opens within ``timeout_s`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False
