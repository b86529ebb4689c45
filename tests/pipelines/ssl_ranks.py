"""One rank of test_pretrain's gathered-loss test, in a light module: each spawned process
imports torch, mura_core.ssl and pipelines.pretrain.gather only (no Ray, no MLflow)."""

from __future__ import annotations

import torch
import torch.distributed as dist

from mura_core.ssl import vicreg_loss
from pipelines.pretrain.gather import gather


def embeddings() -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch: 16 images' embeddings of two views, 8 per rank."""
    generator = torch.Generator().manual_seed(3)
    return torch.randn(16, 6, generator=generator), torch.randn(16, 6, generator=generator)


def gathered_grad(rank: int, world: int, init: str, out: str) -> None:
    """VICReg on the gathered batch; this rank's loss and its embeddings' gradient to a file."""
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        z1, z2 = embeddings()
        mine = slice(rank * 8, (rank + 1) * 8)
        local = [z[mine].clone().requires_grad_(True) for z in (z1, z2)]
        terms = vicreg_loss(gather(local[0]), gather(local[1]))
        terms.loss.backward()
        torch.save({"loss": terms.loss.detach(), "grads": [z.grad for z in local]}, f"{out}{rank}")
    finally:
        dist.destroy_process_group()
