"""Where the microscope's work runs: in this process (``local``, the default) or on a Ray cluster (``ray``).

Both run the same pure functions on the same work items (a shard, a chunk of images to re-score, a chunk
of units to draw or crop), so they write the same tables. On Ray the scan is a Ray Data pipeline: shards
(windows of them, so that the listing stays lazy) are mapped by a pool of actors that each hold the model
(one GPU each where the cluster has GPUs) and return each shard's candidates, which the driver merges; the
other work items are tasks on a pool of such actors.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from cnnviz.core.hooked import HookedModel
from cnnviz.errors import CnnvizError
from cnnviz.microscope.listing import Shard
from cnnviz.microscope.scan import ScanSpec, ShardScan, scan_shard

ENGINES = ("local", "ray")
WINDOW = 32
"""Shards per Ray Data pipeline: the listing is read a window at a time."""
CONNECT_TIMEOUT = 5.0
CPUS_PER_ACTOR = 0.5
"""Fractional CPUs, so that Ray's own tasks are never starved by actors that each hold a whole core."""

Work = Callable[[HookedModel, Any], Any]


class Local:
    """Everything in this process, one item after another."""

    name = "local"

    def __init__(self, model: HookedModel, spec: ScanSpec) -> None:
        self.model, self.spec = model, spec

    def scan(self, shards: Iterable[Shard]) -> Iterator[ShardScan]:
        for shard in shards:
            yield scan_shard(self.model, self.spec, shard)

    def map(self, work: Work, items: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        for item in items:
            yield item, work(self.model, item)

    def close(self) -> None:
        pass


class _Holder:
    """A Ray actor's state: the model (moved to the actor's GPU if it was given one) and the scan's spec."""

    def __init__(self, model_ref: list, spec: ScanSpec) -> None:
        import ray
        import torch

        model = ray.get(model_ref[0])
        self.model = model.to("cuda") if torch.cuda.is_available() and ray.get_gpu_ids() else model
        self.spec = spec


def _scan_actor(model_ref: list, spec: ScanSpec) -> type:
    """Ray Data's callable class: a batch of shard rows in, each shard's scan (as .npz bytes) out. The model's
    reference travels inside the class, not as constructor arguments, which Ray Data would store apart."""

    class ScanActor(_Holder):
        def __init__(self) -> None:
            super().__init__(model_ref, spec)

        def __call__(self, batch: dict) -> dict:
            scans = [scan_shard(self.model, self.spec, Shard(int(i), int(f), tuple(p))).to_bytes()
                     for i, f, p in zip(batch["index"], batch["first"], batch["paths"])]
            return {"scan": scans}

    return ScanActor


class _Worker(_Holder):
    def run(self, work: Work, item: Any) -> tuple[Any, Any]:
        return item, work(self.model, item)


class RayEngine:
    """The same work on a Ray cluster: ``address`` joins one (``auto``, ``ray://host:port``); None starts a
    local Ray with this machine's CPUs. ``workers`` actors (default: one per GPU, else one per CPU)."""

    name = "ray"

    def __init__(self, model: HookedModel, spec: ScanSpec, address: str | None = None, workers: int | None = None) -> None:
        ray = _import_ray()
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            _init(ray, address)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = context.print_on_execution_start = False  # the CLI draws its own bars
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        gpus = int(ray.cluster_resources().get("GPU", 0))
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = workers or gpus or max(1, cpus)
        self.resources = {"num_gpus": 1} if gpus else {"num_cpus": CPUS_PER_ACTOR}
        self.model_ref = [ray.put(model)]
        self.spec = spec
        self.pool = None

    def scan(self, shards: Iterable[Shard]) -> Iterator[ShardScan]:
        it = iter(shards)
        while window := list(itertools.islice(it, WINDOW)):
            rows = [{"index": s.index, "first": s.first, "paths": list(s.paths)} for s in window]
            with warnings.catch_warnings():  # max_restarts=0: a lost actor fails the run rather than restart without its model
                warnings.simplefilter("ignore", DeprecationWarning)
                data = self.ray.data.from_items(rows).map_batches(
                    _scan_actor(self.model_ref, self.spec), batch_size=1,
                    compute=self.ray.data.ActorPoolStrategy(size=min(self.workers, len(rows))),
                    ray_remote_args_fn=lambda: {"max_restarts": 0}, **self.resources)
            for row in data.iter_rows():
                yield ShardScan.from_bytes(row["scan"])

    def map(self, work: Work, items: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        from ray.util import ActorPool

        if self.pool is None:
            actor = self.ray.remote(**self.resources)(_Worker)
            self.pool = ActorPool([actor.remote(self.model_ref, self.spec) for _ in range(self.workers)])
        yield from self.pool.map_unordered(lambda a, item: a.run.remote(work, item), list(items))

    def close(self) -> None:
        self.pool = None
        if self.started:
            self.ray.shutdown()


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise CnnvizError("--engine ray needs Ray: pip install 'cnnviz[ray]'") from None
    return ray


def _check_reachable(address: str) -> None:
    """A ``host:port`` or ``ray://host:port`` address must accept a connection within ``CONNECT_TIMEOUT``
    seconds: Ray itself waits minutes for a cluster that is not there."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise CnnvizError(f"--address must be 'auto', HOST:PORT or ray://HOST:PORT, got '{address}'")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as err:
        raise CnnvizError(f"cannot reach the Ray cluster at {address}: {err.strerror or err}") from None


def _init(ray: Any, address: str | None) -> None:
    """Join ``address`` or start a local Ray; an unreachable cluster is one clear error."""
    if address:
        _check_reachable(address)
    try:
        if address:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        else:
            ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CnnvizError(f"cannot reach the Ray cluster at {address}: {reason}") from None


def engine(name: str, model: HookedModel, spec: ScanSpec, address: str | None = None, workers: int | None = None) -> Local | RayEngine:
    """The engine called ``name`` (checked): ``local`` needs no Ray and takes no ``address``."""
    if name not in ENGINES:
        raise CnnvizError(f"--engine must be one of {', '.join(ENGINES)}, got '{name}'")
    if workers is not None and workers < 1:
        raise CnnvizError(f"--workers must be at least 1, got {workers}")
    if name == "local":
        if address:
            raise CnnvizError("--address joins a Ray cluster: use it with --engine ray")
        return Local(model, spec)
    return RayEngine(model, spec, address, workers)
