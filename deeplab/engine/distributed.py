"""Multi-process data-parallel training: process groups from torchrun's environment, sharding, DDP, BN handling.

A run launched by ``torchrun`` finds ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``
in its environment; a plain ``python`` run finds none of them and never creates a process group, so every helper
here degrades to the single-process case (rank 0 of 1). Collectives and the rendezvous carry a timeout, so a dead
rank or a rendezvous that cannot form ends in an error naming the cause instead of a silent hang.
"""
from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Sized
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, Sampler, Subset

from ..errors import UserError, one_line
from ..evaluation import ConfusionMatrix

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "PREPARATION_TIMEOUT_S",
    "ShardedSampler",
    "all_reduce_confusion_matrix",
    "broadcast_object",
    "get_rank",
    "get_world_size",
    "how_peer_was_lost",
    "is_distributed",
    "is_main_process",
    "main_process_first",
    "mean_over_ranks",
    "peer_lost",
    "setup_distributed",
    "shard_dataset",
    "shard_indices",
    "teardown_distributed",
    "unwrap_model",
    "wrap_model",
]

#: Seconds a rank waits for the rendezvous or for a peer inside a collective before failing.
DEFAULT_TIMEOUT_S = 600.0
#: Seconds the other ranks wait for rank 0 to prepare the data (download, generate, count) in main_process_first.
PREPARATION_TIMEOUT_S = 24 * 3600.0
# How Gloo and NCCL word a collective that failed because a peer stayed silent, or died (plain RuntimeErrors).
_TIMED_OUT = r"timed out|timeout"
_PEER_LOST = re.compile(rf"{_TIMED_OUT}|connection (closed|reset) by peer|broken pipe|communicator was aborted",
                        re.IGNORECASE)
_LAUNCH_VARS = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def is_distributed() -> bool:
    """True inside an initialised process group (a torchrun run with more than one process)."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's global rank; 0 in a single-process run."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """Number of processes training together; 1 in a single-process run."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True in a single-process run and on rank 0: the only writer of checkpoints, logs, plots and progress."""
    return get_rank() == 0


def _env_int(name: str) -> int:
    """An integer launch variable, or a UserError naming it."""
    value = os.environ.get(name, "")
    try:
        return int(value)
    except ValueError:
        raise UserError(f"environment: {name}={value!r} is not an integer; launch with torchrun") from None


def setup_distributed(device: torch.device, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> torch.device:
    """Join the process group described by torchrun's environment and return this rank's device.

    Without ``WORLD_SIZE`` (or with ``WORLD_SIZE=1``) nothing is initialised and ``device`` comes back unchanged.
    CUDA runs use NCCL on ``cuda:LOCAL_RANK``; CPU runs use Gloo. Waiting longer than ``timeout_s`` for the
    other ranks, at the rendezvous or later in any collective, raises instead of hanging.
    """
    if "WORLD_SIZE" not in os.environ or _env_int("WORLD_SIZE") <= 1:
        return device
    world_size = _env_int("WORLD_SIZE")
    missing = [name for name in _LAUNCH_VARS if name not in os.environ]
    if missing:
        raise UserError(f"environment: WORLD_SIZE={world_size} but {', '.join(missing)} unset; launch with torchrun")
    rank, local_rank = _env_int("RANK"), _env_int("LOCAL_RANK")
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"environment: LOCAL_RANK={local_rank} but this node has {torch.cuda.device_count()} "
                            "GPU(s); use --nproc_per_node <= the GPU count")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    address = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    try:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(seconds=timeout_s),
                                device_id=device if device.type == "cuda" else None)
    except (RuntimeError, ValueError, OSError) as exc:  # DistStoreError and timeouts are RuntimeErrors
        raise UserError(f"rendezvous {address}: rank {rank} of {world_size} could not join the other processes "
                        f"within {timeout_s:g} s ({one_line(exc, 200)})") from None
    return device


def teardown_distributed() -> None:
    """Leave the process group, if any (safe to call in a ``finally`` of a single-process run)."""
    if is_distributed():
        dist.destroy_process_group()


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """Run the block on rank 0 before the other ranks, e.g. to download or generate data once and then read it.

    The others wait up to :data:`PREPARATION_TIMEOUT_S`, not ``--dist-timeout``: a download or a first count of a
    large split may take longer, and rank 0 is busy, not silent (one that dies closes its connections at once)."""
    if not is_distributed():
        yield
        return
    group = dist.new_group(backend="gloo", timeout=timedelta(seconds=PREPARATION_TIMEOUT_S))
    try:
        if not is_main_process():
            dist.barrier(group=group)
        try:
            yield
        finally:
            if is_main_process():
                dist.barrier(group=group)
    finally:
        dist.destroy_process_group(group)


class ShardedSampler(Sampler):
    """This rank's share of every global batch drawn from ``sampler``: rank ``r`` takes positions
    ``[r*b, (r+1)*b)`` of each block of ``global_batch`` items, ``b = global_batch / world_size``.

    Each optimizer step thus sees the same images, in any number of processes, as a single process drawing
    ``global_batch`` at a time; with a per-epoch reseeded ``sampler`` (:class:`~deeplab.engine.data.SeededSampler`) the data
    order depends on the step alone, so resuming with a different number of processes continues it exactly.
    """

    def __init__(self, sampler: Sampler, *, global_batch: int, rank: int | None = None,
                 world_size: int | None = None) -> None:
        self.sampler, self.global_batch = sampler, global_batch
        self.rank = get_rank() if rank is None else rank
        self.world_size = get_world_size() if world_size is None else world_size
        if global_batch % self.world_size:
            raise ValueError(f"global batch {global_batch} is not divisible by {self.world_size} processes")
        self.per_rank = global_batch // self.world_size

    def __iter__(self) -> Iterator[Any]:
        first = self.rank * self.per_rank
        for position, item in enumerate(self.sampler):
            if first <= position % self.global_batch < first + self.per_rank:
                yield item


def shard_indices(num_samples: int, *, rank: int | None = None, world_size: int | None = None) -> list[int]:
    """Indices ``rank, rank + world_size, ...``: disjoint shards covering every sample once, with no padding
    (DistributedSampler repeats samples to even the shards out, which would count them twice in a metric)."""
    rank = get_rank() if rank is None else rank
    world_size = get_world_size() if world_size is None else world_size
    return list(range(rank, num_samples, world_size))


def shard_dataset(dataset: Dataset) -> Dataset:
    """This rank's :func:`shard_indices` of ``dataset`` (the dataset itself in a single-process run)."""
    if not is_distributed():
        return dataset
    if not isinstance(dataset, Sized):
        raise TypeError("only datasets with a length can be sharded")
    return Subset(dataset, shard_indices(len(dataset)))


def all_reduce_confusion_matrix(matrix: ConfusionMatrix) -> ConfusionMatrix:
    """Sum ``matrix`` over all ranks in place, so scores of sharded evaluation equal a single-process run's."""
    if is_distributed():
        # NCCL reduces CUDA tensors only; Gloo works on the CPU tensor as it is.
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        total = matrix.matrix.to(device)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        matrix.matrix = total.cpu()
    return matrix


def broadcast_object(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (``value`` itself in a single-process run), e.g. the run folder it chose."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """Average of a tensor over all ranks (the tensor itself in a single process), e.g. the loss, so that every
    rank logs the same number and takes the same decision on it (stopping on a non-finite loss)."""
    if not is_distributed():
        return value
    total = value.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / get_world_size()


def how_peer_was_lost(exc: BaseException, timeout_s: float) -> str:
    """In words, what :func:`peer_lost`'s ``exc`` says of the other process: silent past the timeout, or gone (its
    connection closed: killed, crashed), which is said at once, long before any timeout."""
    if re.search(_TIMED_OUT, str(exc), re.IGNORECASE):
        return f"stayed silent past --dist-timeout {timeout_s:g} s"
    return "died (its connection closed)"


def peer_lost(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective of this multi-process run failing because another process died or went
    silent past the timeout."""
    if not is_distributed():
        return False
    return isinstance(exc, dist.DistError) or isinstance(exc, RuntimeError) and bool(_PEER_LOST.search(str(exc)))


def wrap_model(model: nn.Module, device: torch.device, *, sync_bn: bool = True) -> nn.Module:
    """``model`` in DistributedDataParallel (a no-op in a single-process run), BatchNorm made synchronous
    across ranks when ``sync_bn`` and on CUDA (PyTorch's SyncBatchNorm has no CPU kernel; on CPU each rank
    normalises its own share of the batch). Build optimizers from :func:`unwrap_model` of the result."""
    if not is_distributed():
        return model
    if sync_bn and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # keeps the Parameter objects and state-dict keys
    model.to(device)
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model under its own parameter names (no DDP ``module.`` prefix), for checkpoints and optimizers."""
    return model.module if isinstance(model, DistributedDataParallel) else model
