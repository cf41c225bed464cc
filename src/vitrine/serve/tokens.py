"""The bearer tokens the service accepts: from the settings, plus a token file reread whenever it changes.

Rotation without a restart: list the new token beside the old one in the file, move the clients over, then remove
the old one. Every worker rereads the file on the next request after it changed (a stat per request). A file that
becomes invalid is reported in the log and the tokens read before stay in force, so a bad edit locks nobody out
and lets nobody in.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import yaml

from vitrine.errors import InvalidInput

log = logging.getLogger("vitrine.serve")
MIN_TOKEN_CHARS = 8
ROLES = ("read", "write")


@dataclass(frozen=True)
class TokenSet:
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()

    def accepts(self, role: str, token: str) -> bool:
        """Constant-time comparison against every token of the role."""
        found = False
        for expected in getattr(self, role):
            found |= hmac.compare_digest(token.encode(), expected.encode())
        return found


def read_token_file(path: str | os.PathLike) -> TokenSet:
    """`{"read": [...], "write": [...]}` (a single string is one token); ValueError naming the file otherwise."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InvalidInput(f"token file {path}: cannot be read as YAML/JSON ({type(exc).__name__})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict) or set(data) - set(ROLES):
        raise InvalidInput(f'token file {path}: must be an object with "read" and/or "write" lists of tokens')
    roles = {}
    for role in ROLES:
        tokens = data.get(role) or []
        tokens = [tokens] if isinstance(tokens, str) else tokens
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise InvalidInput(f"token file {path}: {role} must be a token or a list of tokens")
        short = [i for i, t in enumerate(tokens) if len(t.strip()) < MIN_TOKEN_CHARS]
        if short:
            raise InvalidInput(f"token file {path}: {role}[{short[0]}] is shorter than {MIN_TOKEN_CHARS} characters")
        roles[role] = tuple(t.strip() for t in tokens)
    return TokenSet(**roles)


class Tokens:
    """The tokens in force now: the settings' own plus the token file's latest valid contents."""

    def __init__(self, read_token: str | None, write_token: str | None, token_file: str | None):
        self.fixed = TokenSet(read=(read_token,) if read_token else (), write=(write_token,) if write_token else ())
        self.path = Path(token_file) if token_file else None
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._from_file = TokenSet()
        if self.path is not None:
            self._stamp, self._from_file = self._stat(), read_token_file(self.path)  # a bad file stops the start

    def current(self) -> TokenSet:
        if self.path is not None:
            stamp = self._stat()
            if stamp != self._stamp:
                with self._lock:
                    if stamp != self._stamp:
                        self._reload(stamp)
        return TokenSet(read=self.fixed.read + self._from_file.read, write=self.fixed.write + self._from_file.write)

    def _reload(self, stamp: tuple | None) -> None:
        try:
            self._from_file = read_token_file(self.path)
        except ValueError as exc:
            log.error("%s; keeping the tokens read before", exc)
        self._stamp = stamp

    def _stat(self) -> tuple | None:
        try:
            info = self.path.stat()
        except OSError:
            return None
        return info.st_mtime_ns, info.st_size, info.st_ino
