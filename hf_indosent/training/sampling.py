"""Batch sampling that is deterministic in (seed, epoch), so an interrupted run resumes on exactly the same batches.

Evaluation batches are always sorted by length (least padding, order does not matter). Training batches are plain
shuffles unless ``group_by_length``: then indices are shuffled, cut into "mega-batches" of ``mega_batch_factor``
batches, sorted by length inside each mega-batch, and the batches are shuffled again, so batches stay random across
epochs while each holds texts of similar length. That is off by default because on SmSA length predicts the label;
:class:`hf_indosent.data.tokenization.MicroBatchCollator` cuts training padding without changing the batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class EpochBatchSampler(Sampler[list[int]]):
    """Yields lists of indices. Set :attr:`epoch` before iterating; iteration itself consumes no global RNG.

    Deliberately no ``set_epoch`` method: Accelerate calls ``set_epoch`` with its own iteration counter, which
    restarts at 0 after a resume; the training loop owns the epoch instead.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        *,
        shuffle: bool,
        group_by_length: bool,
        seed: int = 0,
        mega_batch_factor: int = 50,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size={batch_size} must be positive")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = batch_size
        self.drop_last = False  # read by accelerate's BatchSamplerShard
        self.shuffle = shuffle
        self.group_by_length = group_by_length
        self.seed = seed
        self.mega_batch_factor = mega_batch_factor
        self.epoch = 0

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def _order(self) -> np.ndarray:
        n = len(self.lengths)
        if not self.shuffle:
            # Evaluation: longest first (least padding; the biggest batch, and any out-of-memory, shows up at once).
            return np.argsort(-self.lengths, kind="stable")
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(n)
        if not self.group_by_length:
            return order
        mega = self.batch_size * self.mega_batch_factor
        chunks = [order[i : i + mega] for i in range(0, n, mega)]
        return np.concatenate([chunk[np.argsort(-self.lengths[chunk], kind="stable")] for chunk in chunks])

    def __iter__(self) -> Iterator[list[int]]:
        order = self._order()
        batches = [order[i : i + self.batch_size].tolist() for i in range(0, len(order), self.batch_size)]
        if self.shuffle and self.group_by_length and len(batches) > 1:
            # Shuffle the full batches; a short last batch stays last (accelerate expects only the last to be short).
            full = batches if len(batches[-1]) == self.batch_size else batches[:-1]
            rng = np.random.default_rng([self.seed, self.epoch, 1])
            batches = [full[i] for i in rng.permutation(len(full))] + batches[len(full) :]
        yield from batches
