"""Checks on text from outside: strings that no UTF-8 file, database, tokenizer or response can carry."""

from __future__ import annotations


def is_unicode(text: str) -> bool:
    """False for text holding lone surrogates (undecodable bytes read with surrogateescape, or JSON/YAML escapes
    such as "\\ud800")."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
