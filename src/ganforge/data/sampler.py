"""The training sampler: shuffled by (seed, data epoch), sharded by rank, resumable mid-epoch.

Lightning's DistributedSampler would shard the data under DDP, but it cannot resume mid-epoch, and
a plain `shuffle=True` loader draws its order from the global RNG. This sampler owns all three:
it walks one endless stream of epochs, where epoch e is `randperm(n, seed + e)` (nothing else
moves it) and rank r of W takes every W-th index of it. `consumed` counts the batches training
has taken (the DataModule counts them and checkpoints the number); each new iterator resumes the
stream right there. So N iterations + resume + N iterations sees exactly the data of 2N
uninterrupted ones, even though Lightning counts a run stopped mid-epoch as a finished epoch.

With W ranks of per-device batch B, the union of the ranks' k-th batches is the k-th batch of size
W*B of a single process with the same seed: the global batch does not depend on the world size.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableShardedSampler(Sampler[int]):
    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
    ) -> None:
        assert 0 <= rank < world_size, (rank, world_size)
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.consumed = 0  # batches training has taken from the stream, over all epochs

    @property
    def per_rank(self) -> int:
        """Indices per rank per epoch: the tail that cannot be split evenly is dropped."""
        return self.n // self.world_size

    def __len__(self) -> int:
        if self.drop_last:
            return self.per_rank // self.batch_size * self.batch_size
        return self.per_rank

    @property
    def batches_per_epoch(self) -> int:
        return -(-len(self) // self.batch_size)

    def __iter__(self) -> Iterator[int]:
        # The rest of the current data epoch: a fresh iterator (a new Lightning epoch, or the
        # first one after a resume) continues where training stopped taking batches.
        epoch, done = divmod(self.consumed, self.batches_per_epoch)
        g = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(self.n, generator=g)
        mine = order[self.rank : self.per_rank * self.world_size : self.world_size][: len(self)]
        return iter(mine[done * self.batch_size :].tolist())
