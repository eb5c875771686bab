"""Rank information from the ``torchrun`` environment, passed around as a value (no globals).

``torchrun`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and ``LOCAL_WORLD_SIZE`` for every
process it starts. :func:`get_dist_info` reads them once into a frozen :class:`DistInfo`; jobs pass
that object to whatever needs to know which share of the work is theirs. Without ``torchrun`` the
process is rank 0 of 1, so the same entry point runs on a laptop and on many GPUs.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
from collections.abc import Mapping, Sequence
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class DistributedError(RuntimeError):
    """The torchrun environment is inconsistent; the message names the variable."""


@dataclasses.dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a (possibly single-process) job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1

    @property
    def is_distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the process that alone writes logs, merged files and checkpoints."""
        return self.rank == 0


def _int_var(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise DistributedError(f"environment variable {name}={raw!r} is not an integer") from None


def get_dist_info(environ: Mapping[str, str] | None = None) -> DistInfo:
    """Read the torchrun variables (``os.environ`` by default) into a :class:`DistInfo`."""
    env = os.environ if environ is None else environ
    world = _int_var(env, "WORLD_SIZE", 1)
    rank = _int_var(env, "RANK", 0)
    local_rank = _int_var(env, "LOCAL_RANK", rank if world > 1 else 0)
    local_world = _int_var(env, "LOCAL_WORLD_SIZE", world)
    if world < 1:
        raise DistributedError(f"WORLD_SIZE must be >= 1, got {world}")
    if not 0 <= rank < world:
        raise DistributedError(f"RANK={rank} is outside [0, WORLD_SIZE={world})")
    if not 0 <= local_rank < max(local_world, 1):
        raise DistributedError(f"LOCAL_RANK={local_rank} is outside [0, LOCAL_WORLD_SIZE="
                               f"{local_world})")
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world,
                    local_world_size=local_world)


def shard(items: Sequence[T], info: DistInfo) -> list[T]:
    """This rank's share of ``items``: every ``world_size``-th item from ``rank`` on."""
    return list(items[info.rank :: info.world_size])


def init_process_group(info: DistInfo, backend: str | None = None,
                       timeout_s: float = 4 * 3600) -> bool:
    """Join the torchrun process group when there is more than one process.

    Returns True when this call created the group (call :func:`destroy_process_group` at the end).
    ``backend`` defaults to NCCL with CUDA and gloo otherwise. The HF Trainer creates its own group,
    so SFT does not call this (it leaves that group at the end); collection and DAgger do, for
    their barriers. ``timeout_s`` is long because ranks finish their share of episodes at
    different times before the closing barrier.
    """
    if not info.is_distributed:
        return False
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return False
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    log.info("joined process group: rank %d of %d (%s)", info.rank, info.world_size, backend)
    return True


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op in a single process or without a process group)."""
    if not info.is_distributed:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def destroy_process_group(created: bool) -> None:
    """Leave the process group if :func:`init_process_group` created it."""
    if not created:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
