"""What every HTTP test shares: the write token, its header, a free port, an upload form and the error-body check."""

from __future__ import annotations

import socket

TOKEN = "test-write-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def free_port() -> int:
    """A port free on 127.0.0.1 now (for a server a test starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def upload(data: bytes, name: str = "query.jpg", kind: str = "image/jpeg") -> dict:
    return {"image": (name, data, kind)}


def error_of(response, status: int, code: str) -> str:
    """Assert `response` is the service's error body with `status` and machine-readable `code`; return its message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"status", "code", "message"}, body
    assert body["error"]["status"] == status and body["error"]["code"] == code, body["error"]
    assert "Traceback" not in response.text
    return body["error"]["message"]
