"""Batches from ``torch.utils.data.DataLoader`` workers, in an order fixed by a seeded sampler.

The order is the sampler's alone, so any number of workers gives the same batches:

- :class:`EpochBatchSampler` yields micro-batch ``m`` as a list of ``(epoch, index)`` keys:
  epoch ``e`` is the permutation of the data set seeded by ``seed * 100003 + e`` (torch's
  ``randperm``), cut into micro-batches of ``batch_size`` per rank; under DistributedDataParallel
  rank ``r`` of ``world`` takes slice ``r`` of each group of ``world`` micro-batches, so the
  ranks' batches are disjoint (torch's ``DistributedSampler`` pattern). It starts at any
  micro-batch (a resumed run continues the same order) and drops the last incomplete group of
  each epoch.
- :class:`Batches` is what the workers index with those keys: for each key it calls the data
  set's ``set_epoch(epoch)`` (when it has one), seeds the global ``random``, NumPy and torch
  generators from ``(seed, epoch, index)`` (for data sets that draw from them), reads the item,
  then collates the micro-batch. A data set whose items are deterministic in
  ``(seed, epoch, index)`` (every one in :mod:`sepkit.data`) therefore gives bit-identical
  batches in the main process and in any worker. In the main process (``num_workers=0``) the
  global generators are restored afterwards, so reading data never changes the training's own
  random stream.
- An item or a collation that raises does not kill the worker: the exception comes back as a
  :class:`Failure` in place of the batch, and the consumer raises it (:meth:`Failure.throw`)
  with its own context (the training step), the item's index and the first line of the
  original message (which names the file for sepkit's readers). A user error (a class of
  :mod:`sepkit.errors`, a missing file) stays that class; anything else becomes a
  ``RuntimeError`` (a bug). The worker's traceback is attached as a note.
- :class:`Loaded` wraps an evaluation data set with the recipe's loader options, so that
  :func:`iterate` (what :func:`sepkit.train.evaluate.items` uses) reads its items in order
  through workers.
"""
from __future__ import annotations

import random
import traceback
from dataclasses import dataclass

import numpy as np
import torch

from sepkit.errors import InputError, SepkitError

__all__ = ["LoaderOptions", "EpochBatchSampler", "Batches", "Failure", "Loaded", "epoch_order", "iterate",
           "make_loader"]

#: the epoch permutation's seed is ``seed * EPOCH_SEED_STRIDE + epoch``
EPOCH_SEED_STRIDE = 100003

# exceptions a user can act on (the command line exits 2 on them) that keep their class
_USER_ERRORS = (SepkitError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
                PermissionError)


@dataclass(frozen=True)
class LoaderOptions:
    """How a :class:`~torch.utils.data.DataLoader` is run.

    Attributes:
        num_workers: worker processes (0: items are read in the main process).
        pin_memory: page-locked host batches (only when the data goes to a CUDA device).
        persistent_workers: keep the workers between passes over an evaluation set.
        prefetch_factor: micro-batches each worker reads ahead.
        seed: seeds every item's generators (with its epoch and index).
    """

    num_workers: int = 0
    pin_memory: bool = True
    persistent_workers: bool = True
    prefetch_factor: int = 2
    seed: int = 0

    def __post_init__(self):
        if self.num_workers < 0:
            raise InputError(f"LoaderOptions: num_workers must be >= 0, got {self.num_workers}")
        if self.prefetch_factor < 1:
            raise InputError(f"LoaderOptions: prefetch_factor must be >= 1, got {self.prefetch_factor}")


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation (n,) int64 of the items of epoch ``epoch``."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * EPOCH_SEED_STRIDE + epoch))


class EpochBatchSampler(torch.utils.data.Sampler):
    """Micro-batches ``start, ..., stop - 1`` of one rank, each a list of ``(epoch, index)``.

    Args:
        n: items in the data set.
        batch_size: items per micro-batch (per rank).
        seed: seeds each epoch's permutation (:func:`epoch_order`).
        rank, world: this process's rank and the number of ranks.
        start, stop: the first micro-batch and one past the last (counted over epochs).
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1, start: int = 0,
                 stop: int = 0):
        if batch_size < 1 or world < 1 or not 0 <= rank < world:
            raise InputError(f"EpochBatchSampler: need batch_size >= 1 and 0 <= rank < world, got "
                             f"batch_size={batch_size}, rank={rank}, world={world}")
        self.per_epoch = n // (batch_size * world)
        if self.per_epoch == 0:
            raise InputError(f"the data set has {n} items, fewer than one batch of {batch_size * world}")
        if not 0 <= start <= stop:
            raise InputError(f"EpochBatchSampler: need 0 <= start <= stop, got {start}, {stop}")
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.start, self.stop = start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def keys(self, m: int, order: torch.Tensor | None = None) -> list[tuple[int, int]]:
        """Micro-batch ``m``'s keys (``order``: its epoch's permutation, when already drawn)."""
        epoch, pos = divmod(m, self.per_epoch)
        if order is None:
            order = epoch_order(self.n, self.seed, epoch)
        first = pos * self.batch_size * self.world + self.rank * self.batch_size
        return [(epoch, int(i)) for i in order[first:first + self.batch_size]]

    def __iter__(self):
        order, drawn = None, None
        for m in range(self.start, self.stop):
            epoch = m // self.per_epoch
            if epoch != drawn:
                order, drawn = epoch_order(self.n, self.seed, epoch), epoch
            yield self.keys(m, order)


def _item_seed(seed: int, epoch: int | None, index: int) -> int:
    """The seed of the global generators while item ``index`` of ``epoch`` is read."""
    key = [seed, 0 if epoch is None else epoch + 1, index, 0xDA7A]
    return int(np.random.SeedSequence(key).generate_state(1)[0])


class _SeededGlobals:
    """Seed ``random``, NumPy's and torch's CPU global generators for one item; in the main
    process their states are restored on exit."""

    def __init__(self, seed: int):
        self.seed = seed
        self.saved = None

    def __enter__(self):
        if torch.utils.data.get_worker_info() is None:
            self.saved = (random.getstate(), np.random.get_state(), torch.default_generator.get_state())
        random.seed(self.seed)
        np.random.seed(self.seed)
        torch.default_generator.manual_seed(self.seed)

    def __exit__(self, *exc):
        if self.saved is not None:
            random.setstate(self.saved[0])
            np.random.set_state(self.saved[1])
            torch.default_generator.set_state(self.saved[2])
        return False


class Failure:
    """An exception raised while reading an item or collating a batch, carried back from the
    worker in place of the batch (picklable: the class when it is a user error, the text)."""

    def __init__(self, exc: BaseException, where: str):
        self.user_class = type(exc) if isinstance(exc, _USER_ERRORS) else None
        self.kind = type(exc).__name__
        text = str(exc).strip().splitlines()
        self.message = text[0] if text else self.kind
        self.where = where
        self.trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))

    def exception(self, context: str) -> BaseException:
        """The exception to raise: ``"<context>: <where>: <message>"``, of the original class for
        a user error, else a RuntimeError naming the original class."""
        prefix = f"{context}: {self.where}" if context else self.where
        exc = None
        if self.user_class is not None:
            try:
                exc = self.user_class(f"{prefix}: {self.message}")
            except Exception:  # noqa: BLE001 - a class with another constructor
                exc = None
        if exc is None:
            exc = RuntimeError(f"{prefix}: {self.kind}: {self.message}")
        if hasattr(exc, "add_note"):
            exc.add_note(f"raised while reading data:\n{self.trace}")
        return exc

    def throw(self, context: str = ""):
        raise self.exception(context)


class Batches(torch.utils.data.Dataset):
    """The data set the loader's workers index with a list of ``(epoch, index)`` keys: the
    collated micro-batch of those items (see the module docstring), or a :class:`Failure`.

    Args:
        dataset: map-style data set of items (``set_epoch(epoch)`` is called when it has one
            and a key's epoch is not None).
        collate: ``collate(list of items) -> batch``; None: the single item itself.
        seed: seeds every item's global generators with its key.
        what: names the data in failures (``"train item 17 (epoch 0)"``).
    """

    def __init__(self, dataset, collate=None, seed: int = 0, what: str = "item"):
        self.dataset, self.collate, self.seed, self.what = dataset, collate, seed, what

    def __len__(self) -> int:
        return len(self.dataset)

    def _where(self, epoch, index) -> str:
        return f"{self.what} {index}" + ("" if epoch is None else f" (epoch {epoch})")

    def __getitem__(self, keys):
        items = []
        for epoch, index in keys:
            try:
                if epoch is not None and hasattr(self.dataset, "set_epoch"):
                    self.dataset.set_epoch(epoch)
                with _SeededGlobals(_item_seed(self.seed, epoch, index)):
                    items.append(self.dataset[index])
            except Exception as exc:  # noqa: BLE001 - carried to the consumer, which raises it
                return Failure(exc, self._where(epoch, index))
        if self.collate is None:
            return items[0]
        try:
            return self.collate(items)
        except Exception as exc:  # noqa: BLE001
            first = keys[0] if keys else (None, -1)
            return Failure(exc, f"collating the batch of {self._where(*first)}")


def _as_is(batch):
    return batch


def make_loader(batches: Batches, sampler, options: LoaderOptions, device: torch.device | str = "cpu",
                persistent: bool = False) -> torch.utils.data.DataLoader:
    """A DataLoader of ``batches`` (one :class:`Batches` lookup per sampler element, no further
    collation), run as ``options`` say; ``persistent``: keep its workers between iterations
    (with ``options.persistent_workers``). Its shuffling generator is a private one, so making
    an iterator draws nothing from torch's global generator."""
    kwargs = {}
    if options.num_workers > 0:
        kwargs.update(prefetch_factor=options.prefetch_factor,
                      persistent_workers=persistent and options.persistent_workers)
    pin = bool(options.pin_memory) and torch.device(device).type == "cuda"
    return torch.utils.data.DataLoader(batches, sampler=sampler, batch_size=None, collate_fn=_as_is,
                                       num_workers=options.num_workers, pin_memory=pin,
                                       generator=torch.Generator().manual_seed(options.seed), **kwargs)


def close_loader(iterator) -> None:
    """Stop the workers of a DataLoader iterator now (rather than when it is collected)."""
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()


class Loaded(torch.utils.data.Dataset):
    """An evaluation data set with the loader options its items are read with (see
    :func:`iterate`); indexing, ``len`` and attributes are the wrapped data set's.

    ``context`` prefixes the message of an item that fails (e.g. ``"step 200: validation"``).
    """

    def __init__(self, dataset, options: LoaderOptions, what: str = "item", device: torch.device | str = "cpu"):
        self.dataset, self.options, self.what, self.device = dataset, options, what, device
        self.context = ""
        self._loaders: dict[int, torch.utils.data.DataLoader] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        return self.dataset[index]

    def __getattr__(self, name):
        if name.startswith("__") or name in ("dataset", "options", "_loaders"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def loader(self, n: int) -> torch.utils.data.DataLoader:
        """The DataLoader of the first ``n`` items in order (one item per element); kept, with
        its workers when they persist, for the next pass over the same items."""
        if n not in self._loaders:
            for old in list(self._loaders):  # one set of persistent workers at a time
                self._drop(old)
            keys = [[(None, i)] for i in range(n)]
            self._loaders[n] = make_loader(Batches(self.dataset, None, self.options.seed, self.what), keys,
                                           self.options, self.device, persistent=True)
        return self._loaders[n]

    def _drop(self, n: int) -> None:
        loader = self._loaders.pop(n)
        it = getattr(loader, "_iterator", None)
        if it is not None:
            close_loader(it)

    def close(self) -> None:
        """Stop persistent workers."""
        for n in list(self._loaders):
            self._drop(n)


def iterate(dataset, n: int | None = None):
    """Items ``0 .. n-1`` of ``dataset`` in order (all when ``n`` is None): through the
    workers of its loader options when it is :class:`Loaded`, else in this process; either way
    seeded like :class:`Batches` and a failing item raised as :meth:`Failure.throw` does."""
    n = len(dataset) if n is None else min(n, len(dataset))
    if n <= 0:
        return
    if isinstance(dataset, Loaded):
        context, source = dataset.context, dataset.loader(n)
    else:
        batches = Batches(dataset, None, 0, "item")
        context, source = "", (batches[[(None, i)]] for i in range(n))
    for item in source:
        if isinstance(item, Failure):
            item.throw(context)
        yield item
