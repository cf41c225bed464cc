"""vitrine's errors: one hierarchy, each class with a stable machine-readable `code`, an HTTP `status` and a CLI
`exit_code`. The CLI catches only `VitrineError` (anything else is a bug: a traceback and `INTERNAL_EXIT_CODE`), and
the service maps each class to its status with the code in every error body. Clients match on codes, never wording.

Each subclass also derives from the builtin its callers knew before (`ValueError`, `LookupError`, ...), so that
`except ValueError` around a library call keeps working. A module may add a subclass with a more specific `code`
(`FilterError`, `DataError`, ...); the README's error table lists every code, and a test keeps the two in step.
"""

from __future__ import annotations

import copy

USER_EXIT_CODE = 2  # bad input, not found, conflict: the user can fix the command
ENVIRONMENT_EXIT_CODE = 1  # unavailable, disk full: the command was right, the machine or a server was not
INTERNAL_EXIT_CODE = 70  # a bug in vitrine (EX_SOFTWARE): traceback printed, please report it
ISSUES_URL = "https://github.com/vitrine-fashion/vitrine/issues"


class VitrineError(Exception):
    """A refusal a user can act on: a message, a stable `code`, an HTTP `status` and a CLI `exit_code`."""

    code, status, exit_code = "error", 500, ENVIRONMENT_EXIT_CODE

    def __init__(self, message: str = "", *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def __str__(self) -> str:
        return self.message

    def body(self) -> dict:
        """The JSON error body the service answers with."""
        return {"error": {"status": self.status, "code": self.code, "message": self.message}}

    def prefixed(self, where: str) -> VitrineError:
        """The same error (class, code, status) with `where` before its message: `queries[2]: k must be ...`."""
        clone = copy.copy(self)
        clone.message = f"{where}{self.message}"
        clone.args = (clone.message,)
        return clone


class InvalidInput(VitrineError, ValueError):
    """A request, argument, file or config that vitrine refuses as written."""

    code, status, exit_code = "invalid_input", 400, USER_EXIT_CODE


class ConfigError(InvalidInput):
    """A config, schema or settings mapping with an unknown key or a bad value."""

    code = "invalid_config"


class InvalidRequest(InvalidInput):
    """An HTTP request whose fields do not validate: a wrong type, out of range, unknown, missing or conflicting."""

    code = "invalid_request"


class WrongType(InvalidInput, TypeError):
    """An argument of the wrong type for a public function (a string where a list of them is taken)."""

    code = "wrong_type"


class TooLarge(InvalidInput):
    """A body, upload or image over a limit."""

    code, status = "too_large", 413


class UnsupportedMediaType(InvalidInput):
    """A body with no Content-Type or another than vitrine reads, or an upload that is not an image."""

    code, status = "unsupported_media_type", 415


class NotFound(VitrineError, LookupError):
    """A product, model, index, file or route that does not exist."""

    code, status, exit_code = "not_found", 404, USER_EXIT_CODE


class MissingFile(NotFound, FileNotFoundError):
    """A file or directory a command or config names that is not there (or holds not what it should)."""

    code = "missing_file"


class UnknownName(NotFound, KeyError):
    """A name that nothing is registered under: a model, a recipe, a split, a field."""

    code = "unknown_name"


class Conflict(VitrineError):
    """The request clashes with what exists: a directory already there, a write against another writer."""

    code, status, exit_code = "conflict", 409, USER_EXIT_CODE


class AlreadyExists(Conflict, FileExistsError):
    """A file or directory that a command would make is there already."""

    code = "already_exists"


class Unauthorized(VitrineError):
    """A service request without the bearer token its endpoint needs."""

    code, status, exit_code = "unauthorized", 401, USER_EXIT_CODE


class Forbidden(VitrineError):
    """A service request whose token is not valid for its endpoint, or a write while writes are disabled."""

    code, status, exit_code = "forbidden", 403, USER_EXIT_CODE


class Unavailable(VitrineError, RuntimeError):
    """A dependency (a Milvus server, a worker, an optional package) cannot serve now; the same call may work later."""

    code, status, exit_code = "unavailable", 503, ENVIRONMENT_EXIT_CODE


class DiskFull(VitrineError, OSError):
    """No space left while writing; what was committed before is intact."""

    code, status, exit_code = "disk_full", 507, ENVIRONMENT_EXIT_CODE


class Damaged(VitrineError, RuntimeError):
    """Files vitrine wrote are damaged (cut short, or failing their checksum): rebuild them or restore a snapshot."""

    code, status, exit_code = "damaged", 500, ENVIRONMENT_EXIT_CODE


def error_classes(root: type[VitrineError] = VitrineError) -> list[type[VitrineError]]:
    """`root`'s subclasses, recursively, of the modules imported so far, in name order."""
    found: dict[type[VitrineError], None] = {}
    todo = list(root.__subclasses__())
    while todo:
        cls = todo.pop()
        if cls not in found:
            found[cls] = None
            todo.extend(cls.__subclasses__())
    return sorted(found, key=lambda cls: (cls.__module__, cls.__qualname__))


class MissingDependency(Unavailable, ImportError):
    """An optional package a feature needs is not installed; the message names what to install."""

    code = "missing_dependency"
