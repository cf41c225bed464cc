"""The service's settings: a frozen dataclass read from a JSON file, the environment and the command line."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields, replace

from vitrine.config_file import ConfigFile, loads_object
from vitrine.constants import DEFAULT_RUNTIME, DEFAULT_SEARCH_MODE, RUNTIMES, SEARCH_MODES
from vitrine.errors import ConfigError
from vitrine.machine import usable_cores
from vitrine.ranking.relevance import METHODS as RELEVANCE_METHODS

ENV_PREFIX = "VITRINE_"
SETTINGS_ENV = "VITRINE_SERVE_SETTINGS"  # JSON of ServeSettings, how `vitrine serve` hands them to its workers


@dataclass(frozen=True)
class ServeSettings(ConfigFile):
    """Read and written like every config (vitrine.config_file): unknown names refused, each value's type checked."""

    config_name = "serve settings"

    index: str = "runs/serve/index"  # a directory (FAISS) or milvus:FILE.db | milvus:URI (see vitrine.index.store)
    images: str | None = (
        None  # product images; None: <index>/images, or beside a Milvus Lite file (shared storage for a Milvus server)
    )
    model: str | None = None  # the index's own model when None
    tag_model: str | None = None  # vitrine's default tagging model when None
    combiner: str = "combiner"  # composed search: sum | combiner (shipped) | a combiner directory
    runtime: str = DEFAULT_RUNTIME  # one of vitrine.constants.RUNTIMES (ONNX exports go into the cache on first use)
    write_token: str | None = None  # bearer token for POST/DELETE /products; writes are refused while unset
    read_token: str | None = None  # when set, read endpoints need it too (default: reads are open)
    max_upload_bytes: int = 10 * 2**20
    max_pixels: int = 40_000_000
    max_k: int = 100
    max_text_chars: int = 500
    regions: str = "foreground"  # region views for tagging
    threads: int = 0  # torch intra-op threads per worker process; 0 = one (concurrent requests use the other cores)
    workers: int = 1
    max_batch: int = 32  # concurrent queries encoded in one forward pass, at most
    # under load (the last batch held more than one query), wait up to this long for a fuller batch; a lone query never
    # waits. 1 ms measured best of 0 / 1 / 3 ms at 32 text clients (README, "The request path")
    batch_wait_us: int = 1000
    max_batch_queries: int = 32  # queries in one POST /search/batch, at most
    token_file: str | None = (
        None  # JSON/YAML {"read": [...], "write": [...]}, reread when it changes: rotate tokens without a restart
    )
    cors_origins: str | None = (
        None  # comma-separated origins allowed to call the API from a browser ("*" for any); None: CORS off
    )
    # how a query ranks unless it says: hybrid (vector + BM25 fused, query words as soft filters; vector alone on a
    # store without BM25, such as a Milvus server before 2.5), vector or lexical (README, "Ranking")
    search_mode: str = DEFAULT_SEARCH_MODE
    # the "no close match" judgement: shopper (calibrated on shopper-like queries from the catalog's values, images
    # judged, chips judged on what they hold) or titles (calibrated on the catalog's titles, text only: the judgement
    # before, kept for comparison; README, "Ranking")
    relevance: str = "shopper"

    def __post_init__(self):
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        if self.search_mode not in SEARCH_MODES:
            raise ConfigError(f"search_mode must be one of {', '.join(SEARCH_MODES)}, got {self.search_mode!r}")
        if self.relevance not in RELEVANCE_METHODS:
            raise ConfigError(f"relevance must be one of {', '.join(RELEVANCE_METHODS)}, got {self.relevance!r}")
        for name in (
            "max_upload_bytes", "max_pixels", "max_k", "max_text_chars", "workers", "max_batch", "max_batch_queries",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_wait_us < 0:
            raise ConfigError(f"batch_wait_us must be >= 0, got {self.batch_wait_us}")
        if self.workers > 1 and is_milvus_lite(self.index):
            raise ConfigError(
                "Milvus Lite allows one process per file: serve it with one worker, or use a Milvus server "
                "(--index milvus:http://host:19530) to share one index between workers and machines"
            )
        for name in ("write_token", "read_token"):
            token = getattr(self, name)
            if token is not None and len(token) < 8:
                raise ConfigError(f"{name} must be at least 8 characters (a guessable token protects nothing)")

    def public(self) -> dict:
        """The settings without secrets, for logs and /healthz."""
        data = self.to_dict()
        for name in ("write_token", "read_token"):
            data[name] = "set" if data[name] else None
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> "ServeSettings":
        """Settings from a JSON object (how `vitrine serve` hands them to its workers); bad JSON, an unknown name or a
        wrong type is a ConfigError naming it."""
        return cls.from_dict(loads_object(text, "serve settings", ConfigError))


def load_settings(path: str | None = None, environ: dict | None = None, **overrides) -> ServeSettings:
    """Defaults, then a JSON file, then VITRINE_<NAME> environment variables, then explicit overrides (not None)."""
    environ = os.environ if environ is None else environ
    settings = ServeSettings()
    if path:
        settings = ServeSettings.from_file(path)  # may `extends` another settings file
    changes = {}
    for field in fields(ServeSettings):
        raw = environ.get(ENV_PREFIX + field.name.upper())
        if raw is None:
            continue
        if field.name == "workers" and raw.strip().lower() == "auto":
            raw = "auto"
        elif field.type == "int":
            try:
                raw = int(raw)
            except ValueError:
                raise ConfigError(f"{ENV_PREFIX + field.name.upper()} must be a whole number, got {raw!r}") from None
        changes[field.name] = raw
    changes.update({name: value for name, value in overrides.items() if value is not None})
    if changes.get("workers") == "auto":
        changes["workers"] = auto_workers(changes.get("index", settings.index))
    return replace(settings, **changes)


def is_milvus_lite(index: str) -> bool:
    """milvus:FILE.db: a Milvus Lite file, which one process at a time may open."""
    return index.startswith("milvus:") and index.removeprefix("milvus:").split("#")[0].endswith(".db")


def auto_workers(index: str) -> int:
    """`--workers auto`: one worker process per core this process may run on (each worker encodes on one thread and
    micro-batches its own requests); one for a Milvus Lite file, which allows a single process."""
    if is_milvus_lite(index):
        return 1
    return usable_cores()
