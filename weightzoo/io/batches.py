"""Torch batches from a Selection: whole weight vectors or random slices, prefetched.

Each epoch shuffles the models, cuts them into groups of at most ``cache_rows`` model rows,
reads a group's rows (whole storage chunks, one request per layout), shuffles the samples
inside the group and emits batches. Every row is read once per epoch and at most one group
is cached, so memory stays bounded while batches still mix many networks. A background
thread prepares ``prefetch`` batches ahead of the consumer.

Random slices (the "local" meta-classifier of Eilertsen et al., ECAI 2020): each sample
gets a fresh uniform offset in ``[0, n_features - slice_length]`` every time it is drawn;
offsets depend on (seed, epoch, group) only, so runs are reproducible and epochs differ.

Batch dicts: ``weights`` float32 [B, n_features or slice_length], ``offset`` int64 [B]
(0 for whole vectors), ``k`` int64 [B], ``index`` int64 [B] (the sample's row in
``selection.rows``), ``model_id`` list[str] and, with ``label=``, ``label`` [B]: int64
codes into ``selection.classes(label)`` for categorical/bool columns, else float32.
"""

from __future__ import annotations

import math
import os
import queue
import threading

import numpy as np
import torch

CACHE_BYTES = 128 * 2**20  # default bound on the rows held per group
_IMPORTED_IN = os.getpid()  # a forked child inherits this; a spawned one re-imports the module


class TorchBatches:
    """An iterable of batch dicts; every ``iter()`` runs one epoch and advances ``epoch``."""

    def __init__(self, selection, batch_size: int, *, slice_length: int | None = None, shuffle: bool = True,
                 seed: int = 0, label: str | None = None, prefetch: int = 2, drop_last: bool = False,
                 cache_rows: int | None = None, epoch: int = 0, shard: tuple[int, int] = (0, 1)) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1; got {batch_size}")
        selection.require_samples()
        self.selection, self.batch_size = selection, int(batch_size)
        self.slice_length, self.shuffle, self.seed = slice_length, shuffle, seed
        self.label, self.prefetch, self.drop_last, self.epoch = label, prefetch, drop_last, epoch
        self.shard = shard
        lengths = selection.feature_lengths
        if slice_length is None:
            selection.n_features  # whole vectors need one length: raises a clear error otherwise
        elif not 1 <= slice_length <= min(lengths.values()):
            raise ValueError(f"slice_length={slice_length} must be between 1 and the smallest "
                             f"feature length of the selection {lengths}")
        models = selection.models
        self._lengths = models["layout_id"].map(lengths).to_numpy(np.int64)  # per model
        self._ks = list(selection.snapshot_indices.values())  # per model position
        counts = np.array([len(k) for k in self._ks])
        self._first = np.r_[0, np.cumsum(counts)[:-1]]  # first sample index of each model
        self._counts = counts
        self._labels = None if label is None else selection.label_values(label)
        if cache_rows is None:
            row_bytes = max(4 * int(n) * int(p) for n, p in zip(models["n_snapshots"], models["n_params"]))
            cache_rows = max(1, CACHE_BYTES // max(1, row_bytes))
        # With several shards, smaller groups keep every worker busy.
        self.cache_rows = max(1, min(int(cache_rows), math.ceil(len(models) / shard[1])))

    def __len__(self) -> int:
        """Batches per epoch (for this shard)."""
        n = sum(int(self._counts[group].sum()) for _, group in self._groups(self.epoch))
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        epoch, self.epoch = self.epoch, self.epoch + 1
        return _prefetched(self._batches(epoch), self.prefetch)

    def _groups(self, epoch: int) -> list[tuple[int, np.ndarray]]:
        """This shard's (group number, model positions) for ``epoch``."""
        n = len(self.selection.models)
        order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
        groups = list(enumerate(order[i:i + self.cache_rows] for i in range(0, n, self.cache_rows)))
        worker, workers = self.shard
        return groups[worker::workers]

    def _batches(self, epoch: int):
        pending: list[tuple] = []
        for number, group in self._groups(epoch):
            # Seeded per (epoch, group): a group draws the same offsets whichever worker reads it.
            rng = np.random.default_rng([self.seed, epoch, number])
            data = self._read_group(group)
            samples = [(m, j) for m in group for j in range(self._counts[m])]
            if self.shuffle:
                samples = [samples[i] for i in rng.permutation(len(samples))]
            for m, j in samples:
                offset = 0
                if self.slice_length is not None:
                    offset = int(rng.integers(0, self._lengths[m] - self.slice_length + 1))
                pending.append((m, j, offset, data[m]))
                if len(pending) == self.batch_size:
                    yield self._collate(pending)
                    pending = []
        if pending and not self.drop_last:
            yield self._collate(pending)

    def _read_group(self, group: np.ndarray) -> dict[int, np.ndarray]:
        """Selected snapshots × features of each model in ``group``: {model position: [n_k, n_features]}."""
        return dict(zip((int(m) for m in group), self.selection.read_models(group)))

    def _collate(self, pending: list[tuple]) -> dict:
        length = self.slice_length
        if length is None:
            weights = np.stack([data[j] for _, j, _, data in pending])
        else:
            weights = np.stack([data[j, offset:offset + length] for _, j, offset, data in pending])
        index = np.array([self._first[m] + j for m, j, _, _ in pending], dtype=np.int64)
        batch = {"weights": torch.from_numpy(weights.astype(np.float32, copy=False)),
                 "offset": torch.tensor([offset for _, _, offset, _ in pending], dtype=torch.int64),
                 "k": torch.from_numpy(np.array([self._ks[m][j] for m, j, _, _ in pending], np.int64)),
                 "index": torch.from_numpy(index),
                 "model_id": [self.selection.models.at[m, "model_id"] for m, _, _, _ in pending]}
        if self._labels is not None:
            batch["label"] = torch.from_numpy(self._labels[index])
        return batch


class WeightBatchDataset(torch.utils.data.IterableDataset):
    """Batches of a Selection as an IterableDataset; use ``DataLoader(ds, batch_size=None)``.

    Each DataLoader worker takes every ``num_workers``-th group of models, so an epoch yields
    every sample exactly once across workers. Workers open the Icechunk session themselves
    (the selection pickles as tables plus ``(zoo handle, version)``). Offsets and shuffling follow
    ``epoch``: it advances after each pass in the iterating process; with non-persistent
    workers call :meth:`set_epoch` before each epoch, as with DistributedSampler.
    """

    def __init__(self, selection, batch_size: int, **options) -> None:
        super().__init__()
        self.selection, self.batch_size = selection, batch_size
        self.epoch = options.pop("epoch", 0)
        self.options = options
        TorchBatches(selection, batch_size, **options)  # validate the options in the main process

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch (shuffle order and slice offsets) of the next pass."""
        self.epoch = epoch

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        if info is not None and _IMPORTED_IN != os.getpid():
            # Icechunk's tokio runtime does not survive fork(): a forked worker would hang.
            raise RuntimeError("weightzoo readers cannot run in fork()ed DataLoader workers (Icechunk's "
                               "runtime does not survive fork); pass multiprocessing_context='spawn' or "
                               "'forkserver', or use selection.torch_loader(...)")
        shard = (info.id, info.num_workers) if info is not None else (0, 1)
        batches = TorchBatches(self.selection, self.batch_size, epoch=self.epoch, shard=shard, **self.options)
        self.epoch += 1
        return iter(batches)


def torch_loader(selection, batch_size: int, *, num_workers: int = 2, context: str = "forkserver",
                 **options) -> torch.utils.data.DataLoader:
    """A DataLoader over :class:`WeightBatchDataset` with fork-safe, persistent workers.

    Workers are started with ``context`` (not fork, see WeightBatchDataset) and persist, so
    each keeps its Icechunk session and advances its epoch (fresh shuffle and offsets) per pass.
    """
    dataset = WeightBatchDataset(selection, batch_size, **options)
    if num_workers == 0:
        return torch.utils.data.DataLoader(dataset, batch_size=None)
    return torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=num_workers,
                                       multiprocessing_context=context, persistent_workers=True)


def _prefetched(batches, depth: int):
    """Run the ``batches`` generator in a thread, ``depth`` batches ahead; errors re-raise here."""
    if depth <= 0:
        yield from batches
        return
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def offer(item) -> bool:
        # A bounded put that gives up once the consumer has gone, so the thread always ends.
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if not offer(batch):
                    return
            offer(done)
        except BaseException as error:  # handed to the consumer, which re-raises it
            offer(error)

    thread = threading.Thread(target=produce, name="weightzoo-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = slots.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        # The consumer stopped early (break, error or garbage collection): let the thread end.
        stop.set()
        thread.join(timeout=5)
