"""Data-parallel training across processes (torch.distributed, DistributedDataParallel).

A run is distributed when it starts under ``torchrun`` (or ``calobench run --nproc N``,
which launches the N processes itself): ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` and the
rendezvous variables come from the environment. The backend is NCCL on CUDA and gloo on
CPU. Conventions that make a run independent of the number of processes:

- every rank draws the *same* global batch (indices and latent noise, from identically
  seeded generators) and keeps its slice (:func:`shard`), so the all-reduced gradient is the
  full-batch gradient and a checkpoint resumes at any world size;
- only rank 0 writes (checkpoints, samples, records); logged losses are averaged over ranks;
- batch norm is synchronised (SyncBatchNorm) only when the world is larger than one and the
  device is CUDA (torch has no CPU implementation; on CPU each rank normalises its slice).
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn

from .errors import CalobenchError


def launched() -> bool:
    """True when the environment describes a multi-process run."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if initialized() else 1


def rank() -> int:
    return dist.get_rank() if initialized() else 0


def is_main() -> bool:
    return rank() == 0


def init(device: torch.device) -> torch.device:
    """Join the process group if launched as one; returns this rank's device."""
    if not launched() or initialized():
        return device
    if not dist.is_available():
        raise CalobenchError("this torch build has no torch.distributed")
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def shutdown() -> None:
    if initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if initialized():
        dist.barrier()


def wrap(net: nn.Module, device: torch.device) -> nn.Module:
    """The module to train with: DDP around it when the world is larger than one (batch norm
    synchronised on CUDA), else the module itself. Weights stay in ``net``."""
    if world_size() == 1:
        return net
    if device.type == "cuda":
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    return nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)


def shard(*tensors):
    """This rank's contiguous slice of each global-batch tensor (the batch must divide evenly)."""
    w, r = world_size(), rank()
    out = []
    for t in tensors:
        if len(t) % w:
            raise CalobenchError(f"batch of {len(t)} does not divide over {w} processes")
        k = len(t) // w
        out.append(t[r * k:(r + 1) * k])
    return out[0] if len(out) == 1 else tuple(out)


def mean(value: torch.Tensor) -> torch.Tensor:
    """The average of a tensor (any shape, detached) over ranks (the value itself in a single process)."""
    if world_size() == 1:
        return value
    v = value.detach().float().reshape(-1).clone()
    dist.all_reduce(v)
    return (v / world_size()).reshape(value.shape)


def broadcast_flag(flag: bool) -> bool:
    """Rank 0's value of a boolean, on every rank (e.g. the time-based checkpoint decision)."""
    return bool(broadcast_int(int(flag)))


def broadcast_int(value: int) -> int:
    """Rank 0's value of a small integer (e.g. several decisions packed as bits), on every rank."""
    if world_size() == 1:
        return value
    t = torch.tensor([int(value)], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.broadcast(t, 0)
    return int(t.item())
