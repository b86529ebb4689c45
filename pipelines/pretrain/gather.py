"""The embeddings of every worker, with a gradient: VICReg's FullGatherLayer.

VICReg's variance and covariance are statistics of the batch; on several workers they are
taken over the global batch. `gather` all-gathers each rank's embeddings; backward sums the
ranks' gradients and keeps this rank's slice (all_reduce: gloo has no reduce_scatter). So
every rank computes the global batch's loss, its embeddings' gradient is world × the global
one, and DDP's averaging of the parameters' gradients makes the step the global batch's.
Torch only (no Ray), so a plain process group can test it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


class _GatherAll(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = [torch.zeros_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return tuple(out)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> torch.Tensor:
        stacked = torch.stack(grads)
        dist.all_reduce(stacked)
        return stacked[dist.get_rank()]


def gather(z: torch.Tensor) -> torch.Tensor:
    """The embeddings of the whole global batch (this rank's alone when there is one)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return z
    return torch.cat(_GatherAll.apply(z), dim=0)
