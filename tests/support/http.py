"""Small blocking HTTP clients for the tests (stdlib only)."""

from __future__ import annotations

import http.client
import socket


def get(port: int, path: str = "/", *, host: str = "127.0.0.1", timeout: float = 5.0,
        method: str = "GET", body: bytes | None = None, headers: dict | None = None
        ) -> tuple[int, bytes, dict[str, str]]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, data, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def raw(port: int, data: bytes, *, timeout: float = 5.0, host: str = "127.0.0.1") -> bytes:
    """Send raw bytes, half-close, and read everything until the server closes."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)
