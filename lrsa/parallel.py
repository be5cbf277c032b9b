"""Independent solves in parallel on Dask distributed (the ``lrsa[distributed]`` extra).

A lambda grid is many independent solves on the same features: they go to the workers of a
Dask ``Client``, the features are sent to each worker once (``Client.scatter``), and the
results come back in the order of the serial loop. Dask because it installs from pip as
pure-Python wheels, runs the same code on a laptop (a local cluster of processes) and on a
cluster whose scheduler address a user has (``Client("tcp://host:8786")``), and its
``scatter`` / ``submit`` / ``gather`` are all a grid needs.

Each worker process runs one task at a time with one thread (Dask sets ``OMP_NUM_THREADS=1``
in its workers), so ``workers`` processes use ``workers`` cores.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

__all__ = ["dask_client", "map_on", "submit_all"]


def _distributed():
    try:
        import distributed
    except ImportError as e:
        raise ImportError("parallel solves need Dask distributed: "
                          "pip install 'lrsa[distributed]'") from e
    return distributed


@contextmanager
def dask_client(address=None, workers=None):
    """A Dask ``Client``: connected to the scheduler at ``address``, or to a local cluster
    of ``workers`` processes (default: one per CPU core) started here and shut down on exit.
    The workers are new processes that import the calling script: in a script, call this
    under ``if __name__ == "__main__":`` (notebooks need nothing).

    Examples
    --------
    >>> with dask_client(workers=2) as client:                        # doctest: +SKIP
    ...     grid = lambda_grid(model, "features.14", calib, relative_lam1s, ratios, client=client)
    """
    distributed = _distributed()
    if address is not None:
        if workers is not None:
            raise ValueError("workers is for a local cluster; a remote scheduler at "
                             f"{address!r} has its own")
        with distributed.Client(address) as client:
            yield client
        return
    workers = os.cpu_count() if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    # the dashboard on any free port: a fixed one may be taken by another cluster
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        yield client


class _Pickled:
    """Travels to the workers by plain pickle: Dask's own serializer for nn.Module rebuilds
    modules whose hook registries cannot take hooks (feature collection needs them)."""

    def __init__(self, value):
        self.value = value


def _call(fn, shared, item):
    return fn(*shared.value, *item.value)


def submit_all(client, fn, shared, items):
    """Futures of ``fn(*shared, *item)`` for each of ``items``, on ``client``'s workers.

    ``shared`` (what every call needs: tensors, a model) is sent to every worker once;
    ``items`` are the per-call arguments. Everything travels pickled (see ``_Pickled``).
    """
    [remote] = client.scatter([_Pickled(tuple(shared))], broadcast=True)
    return [client.submit(_call, fn, remote, _Pickled(tuple(item)), pure=False)
            for item in items]


def map_on(client, fn, shared, items, progress=None):
    """``[fn(*shared, *item) for item in items]``, run on ``client``'s workers
    (:func:`submit_all`); results in the order of ``items``; ``progress`` (a tqdm bar or
    None) advances as they arrive."""
    distributed = _distributed()
    futures = submit_all(client, fn, shared, items)
    if progress is not None:
        for _ in distributed.as_completed(futures):
            progress.update(1)
    return client.gather(futures)
