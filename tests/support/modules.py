"""Every module of the installed package imported, for tests that look at all its classes (namespace packages such as
`vitrine.serve` included, which `pkgutil.walk_packages` does not enter)."""

from __future__ import annotations

import importlib
from pathlib import Path

import vitrine


def import_every_module() -> list[str]:
    root = Path(vitrine.__file__).parent
    names = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] in ("__main__",):
            continue
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        importlib.import_module(name)
        names.append(name)
    return names
