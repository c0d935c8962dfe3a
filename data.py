"""The training data loaders (random windows, BOS-aligned rows) and the fixed validation batches.

train.py builds one loader (config loader=random: DataLoader, loader=bos_aligned: BOSLoader) and val_batches;
bench.py times DataLoader. Both loaders are a Loader: one contract (torchtitan's Stateful, plus the batch and
the numbers to log), one set of checks. The shards come from token_shards.py. torch is imported inside the
one function that makes tensors, so importing this module is cheap.
"""
from __future__ import annotations

import bisect
import math
import warnings
from pathlib import Path

import numpy as np

from token_shards import first_token_at, list_shards, read_shard


def _load_shards(data_dir, split: str) -> tuple[list[Path], list[np.ndarray]]:
    paths = list_shards(data_dir, split)
    return paths, [read_shard(p) for p in paths]


def _gather(shard: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """Rows shard[s : s+length] for each start s, as uint16 (one vectorised read)."""
    idx = starts.astype(np.int64)[:, None] + np.arange(length, dtype=np.int64)[None, :]
    return np.asarray(shard[idx])


def _to_xy(rows: np.ndarray):
    """(B, T+1) uint16 rows -> x, y int64 tensors (B, T). The copies are done by numpy:
    torch's multi-threaded copy kernels are slower for this on busy machines."""
    import torch
    return torch.from_numpy(rows[:, :-1].astype(np.int64)), torch.from_numpy(rows[:, 1:].astype(np.int64))


def check_rank(rank: int, world_size: int) -> None:
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} out of range for world_size {world_size}")


def check_sizes(**sizes: int) -> None:
    """ValueError naming the sizes unless all of them are >= 1."""
    if min(sizes.values()) < 1:
        names = ", ".join(list(sizes)[:-1]) + f" and {list(sizes)[-1]}"
        raise ValueError(f"{names} must be >= 1 (got {', '.join(str(v) for v in sizes.values())})")


# ----------------------------------------------------------------------------------------------
# The loaders' one contract

class Loader:
    """What the trainer calls on a training loader (torchtitan's Stateful contract, plus the batch and stats):

        next_batch(seq_len=None)  (x, y) int64 tensors of shape (B, seq_len) of this rank; y is x shifted by one.
                                  seq_len <= T gives the first seq_len+1 tokens of each row (sequence-length
                                  warmup): the stream position does not depend on it.
        state_dict()              the position in the one global stream of rows (epoch, shard, ...): plain ints and
                                  lists (checkpoints load with weights_only), the same on every rank, so a run
                                  resumes on another batch size or world size
        load_state_dict(state)    continue exactly there; ValueError naming what differs if the state is another
                                  loader's or from other shards or settings
        stats()                   numbers for each evaluation's log row: `epoch`, the passes over the data so far

    A loader memory-maps the shards of one split and plans each epoch from (seed, epoch) alone, so every rank
    computes the same stream. A subclass names its `kind` (the config's loader=) and `unit` (what
    its rows are, for errors) and implements _plan_epoch, _rows, _settings, _position, _restore, _epoch_done.
    """

    kind: str
    unit: str

    def __init__(self, data_dir, split: str, batch_size: int, seq_len: int, rank: int, world_size: int,
                 seed: int, **sizes: int):
        """sizes: the subclass's other sizes that must be >= 1 (checked with batch_size and seq_len)."""
        check_rank(rank, world_size)
        check_sizes(batch_size=batch_size, seq_len=seq_len, **sizes)
        self.data_dir, self.split = Path(data_dir), split
        self.B, self.T, self.rank, self.world_size, self.seed = batch_size, seq_len, rank, world_size, seed
        self.paths, self.shards = _load_shards(data_dir, split)
        self.lengths = np.array([len(s) for s in self.shards], dtype=np.int64)
        self.epoch = 0
        self._shard_pos = 0      # index into this epoch's shard order

    def next_batch(self, seq_len: int | None = None):
        """Next (x, y) int64 tensors of shape (B, seq_len) of this rank; y is x shifted by one token."""
        t = self.T if seq_len is None else int(seq_len)
        if not 1 <= t <= self.T:
            raise ValueError(f"seq_len {t} must be in [1, {self.T}] (the loader's {self.unit} are {self.T + 1} tokens)")
        return _to_xy(self._rows(t + 1))

    def state_dict(self) -> dict:
        return {"version": 1, "loader": self.kind, "epoch": int(self.epoch), "shard_pos": int(self._shard_pos),
                **self._position(), **self._settings(), "split": self.split, "shards": [p.name for p in self.paths],
                "lengths": self.lengths.tolist()}

    def load_state_dict(self, state: dict) -> None:
        """Continue exactly where the saved loader stopped (same kind, shards and settings)."""
        self._check_state(state)
        self.epoch = int(state["epoch"])
        self._plan_epoch()
        self._shard_pos = int(state["shard_pos"])
        self._restore(state)

    def stats(self) -> dict:
        """Passes over the data so far: finished epochs plus the share of this epoch's stream taken."""
        return {"epoch": self.epoch + self._epoch_done()}

    def _check_state(self, state: dict) -> None:
        """ValueError naming what differs between a saved loader state and this loader."""
        kind = state.get("loader", "random")  # the random loader's states did not name it before
        if kind != self.kind:
            raise ValueError(f"loader state is from loader={kind}, this run uses loader={self.kind}")
        for key, value in self._settings().items():
            if state[key] != value:
                raise ValueError(f"loader state does not match this loader: {key} was {state[key]!r}, now {value!r}")
        if state["shards"] != [p.name for p in self.paths] or state["lengths"] != self.lengths.tolist():
            raise ValueError(f"loader state does not match this loader: the {self.split} shards differ")

    def _plan_epoch(self) -> None:
        """Set up epoch self.epoch from (seed, epoch)."""
        raise NotImplementedError

    def _rows(self, n: int) -> np.ndarray:
        """The next (B, n) uint16 rows of this rank: the first n tokens of its next B rows of T+1 tokens."""
        raise NotImplementedError

    def _settings(self) -> dict:
        """What a saved state must have been made with (seed, seq_len, ...)."""
        raise NotImplementedError

    def _position(self) -> dict:
        """The position within the current shard (and whatever else resuming needs), as plain ints and lists."""
        raise NotImplementedError

    def _restore(self, state: dict) -> None:
        """Set the position within the current shard from state (the epoch is planned already)."""
        raise NotImplementedError

    def _epoch_done(self) -> float:
        """The share of this epoch's stream taken so far, in [0, 1)."""
        raise NotImplementedError


# ----------------------------------------------------------------------------------------------
# Random windows

class DataLoader(Loader):
    """Random (B, T+1) windows from memory-mapped shards, split disjointly across DDP ranks (loader=random).

    Layout of one epoch e (all derived from (seed, e), so every rank computes the same thing):
      * the shards are visited in a random order;
      * shard s is cut into non-overlapping windows of T+1 tokens at stride T, starting at a random
        phase offset in [0, T) (so each target is the next window's first input token);
      * the windows of a shard are visited in a random order.
    This gives one global stream of windows. Each step consumes the next B*world_size windows of
    the stream; rank r takes windows [r*B, (r+1)*B) of them, so ranks never share a window. When
    fewer than B*world_size windows are left, the epoch ends and `epoch` increases.

    Sequence-length warmup: T is fixed at construction and defines the windows. next_batch(seq_len=t)
    with t <= T returns the first t+1 tokens of each window (the rest of the window is skipped), so
    the stream position, determinism and resumption do not depend on t.

    state_dict() stores the position in the global stream (epoch, shard, window), not anything
    rank-specific: a run can resume with another batch size or world size.
    """

    kind, unit = "random", "windows"

    def __init__(self, data_dir, split: str, batch_size: int, seq_len: int, rank: int = 0,
                 world_size: int = 1, seed: int = 1337):
        super().__init__(data_dir, split, batch_size, seq_len, rank, world_size, seed)
        self._check_enough_data()
        self._window_pos = 0     # index into the current shard's window order
        self._plan_epoch()

    def _check_enough_data(self) -> None:
        T, need = self.T, self.B * self.world_size
        if self.lengths.max() < T + 1:
            raise ValueError(f"sequences of {T} tokens (block_size) need windows of {T + 1} tokens but the longest "
                             f"{self.split} shard in {self.data_dir} has {int(self.lengths.max())} tokens, so "
                             f"block_size can be at most {max(int(self.lengths.max()) - 1, 0)}")
        short = [p.name for p, n in zip(self.paths, self.lengths) if n < 2 * T + 1]
        if short:
            warnings.warn(f"{len(short)} {self.split} shard(s) shorter than 2*seq_len+1 tokens may give no "
                          f"window in some epochs: {short[:3]}")
        worst = int(np.maximum((self.lengths - T) // T, 0).sum())  # windows per epoch, worst offsets
        if worst < need:
            raise ValueError(f"{self.split} data in {self.data_dir} has only {worst} windows of {T + 1} tokens "
                             f"per epoch, fewer than batch_size*world_size = {need}")

    def _plan_epoch(self) -> None:
        rng = np.random.default_rng([self.seed, self.epoch])
        self._order = rng.permutation(len(self.shards))
        self._offsets = rng.integers(0, self.T, size=len(self.shards))
        self._counts = np.maximum((self.lengths - 1 - self._offsets) // self.T, 0)
        self._perm_key, self._perm = None, None

    def _windows(self, s: int) -> np.ndarray:
        """Start positions of shard s's windows, in this epoch's order."""
        if self._perm_key != (self.epoch, s):
            rng = np.random.default_rng([self.seed, self.epoch, int(s), 1])
            self._perm = self._offsets[s] + rng.permutation(self._counts[s]) * self.T
            self._perm_key = (self.epoch, s)
        return self._perm

    def _remaining(self) -> int:
        return int(self._counts[self._order[self._shard_pos:]].sum()) - self._window_pos

    def _take(self, n: int) -> list[tuple[int, np.ndarray]]:
        """Advance the global stream by n windows; return them as (shard, starts) runs."""
        if self._remaining() < n:
            self.epoch += 1
            self._shard_pos = self._window_pos = 0
            self._plan_epoch()
        runs = []
        while n > 0:
            s = int(self._order[self._shard_pos])
            k = min(int(self._counts[s]) - self._window_pos, n)
            if k > 0:
                runs.append((s, self._windows(s)[self._window_pos:self._window_pos + k]))
            self._window_pos += k
            n -= k
            if self._window_pos >= self._counts[s]:
                self._shard_pos += 1
                self._window_pos = 0
        return runs

    def _rows(self, n: int) -> np.ndarray:
        lo, hi = self.rank * self.B, (self.rank + 1) * self.B
        rows, pos = [], 0
        for s, starts in self._take(self.B * self.world_size):
            a, b = max(lo - pos, 0), min(hi - pos, len(starts))
            if a < b:
                rows.append(_gather(self.shards[s], starts[a:b], n))
            pos += len(starts)
        return np.concatenate(rows)

    def _settings(self) -> dict:
        return {"seed": self.seed, "seq_len": self.T}

    def _position(self) -> dict:
        return {"window_pos": int(self._window_pos)}

    def _restore(self, state: dict) -> None:
        self._window_pos = int(state["window_pos"])

    def _epoch_done(self) -> float:
        total = int(self._counts.sum())
        return (total - self._remaining()) / max(total, 1)


# ----------------------------------------------------------------------------------------------
# BOS-aligned rows

class BOSLoader(Loader):
    """(B, T+1) rows that each start at a document start, documents packed best-fit (loader=bos_aligned).

    A document is a BOS token and everything up to the next BOS (across shard ends, so none is cut by
    sharding); tokens before the first BOS of the train data belong to no document and are never used.
    Documents stream in a random order per epoch, from (seed, epoch): shards in a random order, the
    documents of each shard (by where their BOS is) in a random order. A buffer holds buffer_size of them,
    sorted by (length, start). Each row of T+1 tokens is filled left to right: the longest buffered document
    that fits the room left goes in whole (best-fit decreasing); when none fits, the shortest one is cropped to
    the room left and its remaining tokens are dropped (counted in `cropped`). So every row is full, starts
    with BOS, and each later segment starts with BOS too; only a row's last segment can be cropped.

    Ranks: every rank runs the same packer over one global stream of rows; each step packs B*world_size
    rows and rank r keeps rows [r*B, (r+1)*B), so each document read lands on one rank. state_dict() (stream
    position, buffer, counts) is the same on every rank and resumes exactly, also on another world size.
    next_batch(seq_len=t) returns the first t+1 tokens of each row (sequence-length warmup).
    """

    kind, unit = "bos_aligned", "rows"

    def __init__(self, data_dir, batch_size: int, seq_len: int, bos_id: int, rank: int = 0, world_size: int = 1,
                 seed: int = 1337, buffer_size: int = 1000):  # the train split (validation: val_batches' windows)
        super().__init__(data_dir, "train", batch_size, seq_len, rank, world_size, seed, buffer_size=buffer_size)
        self.bos, self.buffer_size = int(bos_id), buffer_size
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])   # global position of each shard's start
        self._first = [first_token_at(s, self.bos) for s in self.shards]
        if all(f is None for f in self._first):
            raise ValueError(f"the train shards in {self.data_dir} hold no document-start token {self.bos}; "
                             f"prepare them with document boundaries or use loader=random")
        self._doc_pos = 0
        self._buffer: list[tuple[int, int]] = []    # (length, global start), sorted
        self.cropped = self.used = 0                # tokens dropped by cropping / placed in rows (all ranks)
        self._plan_epoch()

    def _plan_epoch(self) -> None:
        self._order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.shards))
        self._docs_key, self._docs = None, None

    def _end_after(self, s: int) -> int:
        """Global position where the last document starting in shard s ends: the next shard's first BOS."""
        later = [int(self.offsets[k]) + f for k, f in enumerate(self._first) if k > s and f is not None]
        return later[0] if later else int(self.offsets[-1])

    def _shard_docs(self, s: int) -> np.ndarray:
        """(n, 2) [global start, length] of the documents starting in shard s, in this epoch's order."""
        if self._docs_key != (self.epoch, s):
            starts = np.flatnonzero(np.asarray(self.shards[s]) == self.bos) + self.offsets[s]
            docs = np.stack([starts, np.diff(np.append(starts, self._end_after(s)))], axis=1)
            self._docs = docs[np.random.default_rng([self.seed, self.epoch, s, 1]).permutation(len(docs))]
            self._docs_key = (self.epoch, s)
        return self._docs

    def _next_doc(self) -> tuple[int, int]:
        """(length, global start) of the next document in the stream; a new epoch after the last."""
        while True:
            docs = self._shard_docs(int(self._order[self._shard_pos]))
            if self._doc_pos < len(docs):
                start, n = docs[self._doc_pos]
                self._doc_pos += 1
                return int(n), int(start)
            self._shard_pos, self._doc_pos = self._shard_pos + 1, 0
            if self._shard_pos == len(self.shards):
                self.epoch, self._shard_pos = self.epoch + 1, 0
                self._plan_epoch()

    def pack_row(self) -> list[tuple[int, int]]:
        """The next row of the global stream as (global start, length) segments summing to T+1."""
        room, row = self.T + 1, []
        while room:
            while len(self._buffer) < self.buffer_size:
                bisect.insort(self._buffer, self._next_doc())
            i = bisect.bisect_right(self._buffer, (room, math.inf)) - 1   # the longest document that fits
            n, start = self._buffer.pop(max(i, 0))                          # none fits: crop the shortest
            if n > room:
                self.cropped += n - room
                n = room
            row.append((start, n))
            room -= n
        self.used += self.T + 1
        return row

    def read(self, start: int, n: int) -> np.ndarray:
        """Tokens [start, start+n) of the train data seen as one stream (a document may cross a shard end)."""
        parts, s = [], int(np.searchsorted(self.offsets, start, side="right")) - 1
        while n > 0:
            local = start - int(self.offsets[s])
            k = min(n, int(self.lengths[s]) - local)
            parts.append(np.asarray(self.shards[s][local:local + k]))
            start, n, s = start + k, n - k, s + 1
        return np.concatenate(parts)

    def _rows(self, n: int) -> np.ndarray:
        rows = [self.pack_row() for _ in range(self.B * self.world_size)][self.rank * self.B:(self.rank + 1) * self.B]
        return np.stack([np.concatenate([self.read(a, k) for a, k in row])[:n] for row in rows])

    def stats(self) -> dict:
        """Also the tokens dropped by cropping so far (over all ranks) and their share of the documents' tokens
        taken."""
        return {**super().stats(), "cropped_tokens": self.cropped,
                "cropped_frac": self.cropped / max(1, self.cropped + self.used)}

    def _settings(self) -> dict:
        return {"seed": self.seed, "seq_len": self.T, "bos": self.bos, "buffer_size": self.buffer_size}

    def _position(self) -> dict:
        return {"doc_pos": int(self._doc_pos), "buffer": [[n, s] for n, s in self._buffer], "cropped": self.cropped,
                "used": self.used}

    def _restore(self, state: dict) -> None:
        self._doc_pos = int(state["doc_pos"])
        self._buffer = [(int(n), int(s)) for n, s in state["buffer"]]
        self.cropped, self.used = int(state["cropped"]), int(state["used"])

    def _epoch_done(self) -> float:
        """Counted in tokens: the shards done this epoch, and the current one's share of its documents taken."""
        s = int(self._order[self._shard_pos])
        current = self.lengths[s] * self._doc_pos / max(1, len(self._shard_docs(s)))
        return float((self.lengths[self._order[:self._shard_pos]].sum() + current) / self.offsets[-1])


# ----------------------------------------------------------------------------------------------
# Validation batches

def val_batches(data_dir, batch_size: int, seq_len: int, num_batches: int, rank: int = 0,
                world_size: int = 1) -> tuple[list, int]:
    """This rank's share of a fixed list of validation (x, y) batches: identical on every call, and the same
    list whatever the world size, so the validation loss does not depend on the number of ranks.

    The val shards are cut into windows of seq_len+1 tokens at stride seq_len from offset 0; the
    num_batches * batch_size windows used are spread evenly over all of them, and batch i holds windows
    [i*B, (i+1)*B). num_batches counts batches over all ranks: rank r gets batches r, r+W, r+2W, ..., so the
    ranks' shares are disjoint and together are the 1-rank list. Every rank gets ceil(num_batches / W)
    batches (an FSDP forward is collective); when num_batches is not a multiple of W the short ranks' last
    batch repeats batch 0 and is not counted. Returns (batches, counted): the first `counted` are this
    rank's share. If the split has too few windows, fewer batches are used (together the whole split once);
    if it has fewer than batch_size windows, one smaller batch (with a warning).
    """
    check_rank(rank, world_size)
    paths, shards = _load_shards(data_dir, "val")
    T = seq_len
    counts = [max((len(s) - 1) // T, 0) for s in shards]
    total = sum(counts)
    if total == 0:
        raise ValueError(f"val data in {data_dir} ({sum(len(s) for s in shards)} tokens in {len(shards)} shard(s)) "
                         f"has no window of {T + 1} tokens")
    if total < batch_size:
        batch_size = total
        warnings.warn(f"val data in {data_dir} has only {total} windows of {T + 1} tokens; using one batch of {total}")
    n_batches = min(num_batches, total // batch_size)
    n = n_batches * batch_size
    chosen = (np.arange(n, dtype=np.int64) * total) // n        # evenly spread window indices
    shard_of = np.repeat(np.arange(len(shards)), counts)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    starts = (chosen - first[shard_of[chosen]]) * T
    mine = list(range(rank, n_batches, world_size))
    rounds = -(-n_batches // world_size)
    batches = []
    for i in mine + [0] * (rounds - len(mine)):
        sel = slice(i * batch_size, (i + 1) * batch_size)
        rows = [_gather(shards[s], starts[sel][shard_of[chosen[sel]] == s], T + 1)
                for s in np.unique(shard_of[chosen[sel]])]
        batches.append(_to_xy(np.concatenate(rows)))
    return batches, len(mine)
