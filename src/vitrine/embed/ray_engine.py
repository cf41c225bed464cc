"""Batch embedding on Ray Data: catalog units become a Ray dataset, an actor pool encodes them.

Each actor loads the encoder once; reading, decoding and preprocessing happen in the actors. Results stream back
to the driver, which commits them in the same resumable part format as the in-process path (or upserts them into
a vector store), so a killed job reruns only the units that were not committed.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from vitrine.embed.units import Unit, UnitResult, encode_unit
from vitrine.errors import InvalidInput, MissingDependency


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: start a local Ray for the job (and stop it after)
    workers: int = 2  # actors in the pool
    threads: int = 0  # torch threads per actor; 0: this machine's cores / workers (local), else 1

    def __post_init__(self):
        if self.workers < 1:
            raise InvalidInput("--workers must be >= 1")
        if self.threads < 0:
            raise InvalidInput("threads per worker must be >= 0")

    def threads_per_worker(self) -> int:
        if self.threads:
            return self.threads
        return max(1, (os.cpu_count() or 1) // self.workers) if self.address is None else 1


class EmbedActor:
    """One Ray actor: loads the encoder once, then encodes the units it is given."""

    def __init__(self, model: str, batch_size: int, texts: bool, schema, on_error: str, threads: int):
        import torch

        from vitrine.models import create_model

        torch.set_num_threads(threads)
        self.encoder = create_model(model)
        self.encoder.eval()
        self.settings = dict(batch_size=batch_size, texts=texts, schema=schema, on_error=on_error)

    def __call__(self, batch: dict) -> dict:
        payloads = []
        for raw in batch["unit"]:
            unit = Unit(**pickle.loads(raw))
            payloads.append(pickle.dumps(encode_unit(unit, self.encoder, **self.settings)))
        return {
            "index": np.asarray([pickle.loads(raw)["index"] for raw in batch["unit"]]),
            "result": np.asarray(payloads, dtype=object),
        }


LOCAL_GCS_WAIT_S = "180"  # seconds a local Ray start waits for its GCS server (Ray's default: 30)


class RaySession:
    """`with RaySession(options):` connects to `address`, or starts a local Ray and stops it on exit."""

    def __init__(self, options: RayOptions):
        self.options = options
        self.started = False

    def __enter__(self):
        try:
            import ray
        except ImportError:
            raise MissingDependency(
                "--engine ray needs Ray Data: pip install 'vitrine[scale]' (or 'ray[data]')"
            ) from None
        if not ray.is_initialized():
            if self.options.address is None:
                os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private, local cluster for this job
                # Ray waits 30 s for its GCS server to bind; a machine busy with other work can take longer to start it.
                os.environ.setdefault("RAY_gcs_server_port_wait_time_s", LOCAL_GCS_WAIT_S)
                ray.init(
                    num_cpus=max(self.options.workers * self.options.threads_per_worker(), os.cpu_count() or 1),
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                )
            else:
                ray.init(address=self.options.address, log_to_driver=False, configure_logging=False)
            self.started = True
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        return self

    def __exit__(self, *exc):
        if self.started:
            import ray

            ray.shutdown()
        return False


def encode_units_on_ray(
    units: Sequence[Unit], model: str, options: RayOptions, batch_size: int = 64, texts: bool = False, schema=None,
    on_error: str = "fail",
) -> Iterator[UnitResult]:
    """Encode `units` on an actor pool; yields each unit's result as it completes (any order). Needs a RaySession."""
    import ray

    if not units:
        return
    dataset = ray.data.from_items(
        [{"unit": pickle.dumps(vars(unit))} for unit in units], override_num_blocks=len(units)
    )
    threads = options.threads_per_worker()
    encoded = dataset.map_batches(
        EmbedActor,
        batch_size=1,
        num_cpus=threads,
        compute=ray.data.ActorPoolStrategy(size=min(options.workers, len(units))),
        fn_constructor_kwargs=dict(
            model=model, batch_size=batch_size, texts=texts, schema=schema, on_error=on_error, threads=threads
        ),
    )
    for batch in encoded.iter_batches(batch_size=None, batch_format="numpy"):
        for payload in batch["result"]:
            yield pickle.loads(payload)
