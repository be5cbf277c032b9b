"""Data-parallel training under ``torchrun`` (PyTorch DistributedDataParallel).

``torchrun --nproc_per_node=K ...`` starts K processes and tells each its ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`setup` joins them into a process group (gloo on
CPU, NCCL on CUDA). Every process holds the whole model; :func:`lrsa.train.train` wraps it
in :class:`torch.nn.parallel.DistributedDataParallel`, which averages the gradients over
the processes at every step. A loader made with :func:`lrsa.data.make_loader` and
``shard=True`` gives each process its slice of every *global* batch, so K processes take
the same steps as one process with the same global batch:

    one process:   g = (1/B) sum_{i in batch} grad loss_i
    K processes:   g = (1/K) sum_k (K/B) sum_{i in slice k} grad loss_i   (the same g)

In a plain ``python`` process (``WORLD_SIZE`` unset or 1) everything here is a no-op.
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

__all__ = ["active", "barrier", "device", "gather_to_main", "is_main", "launched",
           "mean_over_ranks", "rank", "setup", "teardown", "world_size"]

#: How long a process waits for the others (e.g. while rank 0 alone compresses a network
#: before the ranks fine-tune it together). torch's own default is 30 minutes.
TIMEOUT = datetime.timedelta(hours=6)


def launched() -> bool:
    """Whether this process was started by ``torchrun`` with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup() -> tuple[int, int]:
    """Join the process group ``torchrun`` describes (once); ``(rank, world_size)``.

    The backend is NCCL when CUDA is available (each process then uses the GPU
    ``LOCAL_RANK``) and gloo otherwise. Returns ``(0, 1)`` in a plain process.
    """
    if active():
        return rank(), world_size()
    if not launched():
        return 0, 1
    if not dist.is_available():
        raise RuntimeError("this PyTorch build has no torch.distributed; run without torchrun")
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
    return rank(), world_size()


def teardown() -> None:
    """Leave the process group (if this process joined one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    """Whether a process group of more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 in a plain process)."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """Number of processes (1 in a plain process)."""
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0: the process that prints, evaluates for the record and writes files."""
    return rank() == 0


def barrier() -> None:
    """Wait for every process (no-op in a plain process)."""
    if active():
        dist.barrier()


def device(requested: str = "cpu") -> torch.device:
    """The device this process trains on: ``cpu``, or for ``cuda`` the GPU ``LOCAL_RANK``."""
    if requested == "cpu":
        return torch.device("cpu")
    if requested != "cuda":
        raise ValueError(f"device must be 'cpu' or 'cuda', got {requested!r}")
    if not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for, but PyTorch sees no CUDA GPU here")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def mean_over_ranks(values: list[float]) -> list[float]:
    """Element-wise mean of ``values`` over the processes (unchanged in a plain process)."""
    if not active():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64,
                     device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t)
    return (t / world_size()).tolist()


def gather_to_main(obj):
    """``[obj of rank 0, obj of rank 1, ...]`` on rank 0, ``None`` elsewhere; ``[obj]`` in
    a plain process."""
    if not active():
        return [obj]
    out = [None] * world_size() if is_main() else None
    dist.gather_object(obj, out, dst=0)
    return out
