"""Multi-process training on torch.distributed, launched the torchrun way (RANK / WORLD_SIZE / LOCAL_RANK set).

Every rank builds the same global batch (same seed, same order) and encodes its own slice of it; features are
all-gathered so the contrastive negatives are the whole global batch, as in open_clip. Each rank computes the loss
rows of its own items against every column; the gather's backward sums the column gradients across ranks, and
the parameter gradients are summed, so a step equals one process's step on the global batch up to float rounding.
Gloo on CPU, NCCL on GPU. Rank 0 alone writes checkpoints, logs, validation and the final model.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from vitrine.errors import InvalidInput


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This rank's contiguous slice of `n` items (n must divide evenly)."""
        if n % self.world:
            raise InvalidInput(
                f"a batch of {n} does not split evenly over {self.world} processes; make batch_size a multiple of "
                "--nproc"
            )
        per = n // self.world
        return slice(self.rank * per, (self.rank + 1) * per)

    def split(self, n: int) -> slice:
        """This rank's part of `n` items when they need not divide evenly (sizes differ by at most one)."""
        base, extra = divmod(n, self.world)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def gather(self, x: torch.Tensor, total: int | None = None) -> torch.Tensor:
        """Every rank's `x`, concatenated in rank order; gradients flow back to each rank's own slice.

        With `total`, the ranks hold `split(total)` parts of different sizes; without it, equal parts.
        """
        if not self.enabled:
            return x
        if total is None:
            return _GatherWithGrad.apply(x)
        sizes = [len(range(total)[Distributed(r, self.world).split(total)]) for r in range(self.world)]
        if x.shape[0] != sizes[self.rank]:
            raise InvalidInput(f"rank {self.rank} holds {x.shape[0]} rows, its split of {total} is {sizes[self.rank]}")
        padded = F.pad(x, (0, 0) * (x.dim() - 1) + (0, max(sizes) - x.shape[0]))
        gathered = _GatherWithGrad.apply(padded)
        return torch.cat([gathered[r * max(sizes) : r * max(sizes) + n] for r, n in enumerate(sizes)])

    def sum_gradients(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        """All-reduce (sum) the gradients of `parameters` in one flat buffer."""
        if not self.enabled:
            return
        grads = [p.grad for p in parameters if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def sum_value(self, value: float) -> float:
        """`value` summed over ranks (each rank's loss share -> the global loss)."""
        if not self.enabled:
            return value
        total = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return float(total)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    @contextmanager
    def main_first(self):
        """Rank 0 runs the block first (e.g. filling a cache); the others run it after, reading what rank 0 wrote."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)  # every rank's loss rows touch every column
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def device_for(ctx: Distributed, device: str) -> torch.device:
    """The torch device of this process: `cuda` is each process's own GPU under torchrun."""
    return torch.device(f"cuda:{ctx.local_rank}" if ctx.enabled and device.startswith("cuda") else device)


def setup(device: str = "cpu") -> Distributed:
    """Join the process group the launcher described in the environment; one process: nothing to join."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        cuda = device.startswith("cuda")
        if cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return Distributed(rank, world, local_rank)


def teardown(ctx: Distributed) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
