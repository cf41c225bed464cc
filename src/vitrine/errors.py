"""vitrine's errors: one hierarchy, each class with a stable machine-readable `code`, an HTTP `status` and a CLI
`exit_code`. The CLI catches only `VitrineError` (anything else is a bug: a traceback and `INTERNAL_EXIT_CODE`), and
the service maps each class to its status with the code in every error body. Clients match on codes, never wording.

Each subclass also derives from the builtin its callers knew before (`ValueError`, `LookupError`, ...), so that
`except ValueError` around a library call keeps working.
"""

from __future__ import annotations

USER_EXIT_CODE = 2  # bad input, not found, conflict: the user can fix the command
ENVIRONMENT_EXIT_CODE = 1  # unavailable, disk full: the command was right, the machine or a server was not
INTERNAL_EXIT_CODE = 70  # a bug in vitrine (EX_SOFTWARE): traceback printed, please report it
ISSUES_URL = "https://github.com/vitrine-fashion/vitrine/issues"


class VitrineError(Exception):
    """A refusal a user can act on: a message, a stable `code`, an HTTP `status` and a CLI `exit_code`."""

    code = "error"
    status = 500
    exit_code = ENVIRONMENT_EXIT_CODE

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


class InvalidInput(VitrineError, ValueError):
    """A request, argument, file or config that vitrine refuses as written."""

    code = "invalid_input"
    status = 400
    exit_code = USER_EXIT_CODE


class ConfigError(InvalidInput):
    """A config, schema or settings mapping with an unknown key or a bad value."""

    code = "invalid_config"


class NotFound(VitrineError, LookupError):
    """A product, model, index, file or route that does not exist."""

    code = "not_found"
    status = 404
    exit_code = USER_EXIT_CODE


class Conflict(VitrineError):
    """The request clashes with what exists: a directory already there, a write against another writer."""

    code = "conflict"
    status = 409
    exit_code = USER_EXIT_CODE


class Unavailable(VitrineError, RuntimeError):
    """A dependency (a Milvus server, a worker, an optional package) cannot serve now; the same call may work later."""

    code = "unavailable"
    status = 503
    exit_code = ENVIRONMENT_EXIT_CODE


class DiskFull(VitrineError, OSError):
    """No space left while writing; what was committed before is intact."""

    code = "disk_full"
    status = 507
    exit_code = ENVIRONMENT_EXIT_CODE
