"""Host-side batch preparation: from (sequence, n) pairs to the model's input tensors.

This is the per-step host work the engine cannot avoid, so it is vectorised: each
sequence's block table lives in a row of a persistent numpy array, synchronised only when
the sequence gains blocks or loses them (`kv_epoch`; one appended block, the common case,
for every row at once), per-sequence fields are read with one list comprehension each, and
positions, slot mappings and block tables are gathered with numpy. Every int32 input goes
to the device in one copy; sampling tensors are reused while the batch's parameters repeat.
Used by the real runner and by the stub runner of the host-overhead benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from runtime_modules.models.qwen3 import AttnMeta
from runtime_modules.sequence import Sequence


@dataclass(slots=True)
class StepInputs:
    """One step's inputs on the device."""

    input_ids: torch.Tensor          # [T] int32
    positions: torch.Tensor          # [T] int32
    meta: AttnMeta
    logits_indices: torch.Tensor | None  # [S] rows of the hidden states to sample; None: all
    temperatures: torch.Tensor | None    # [S] fp32; None: all greedy
    top_ps: torch.Tensor | None          # [S] fp32; None: no nucleus cut
    num_seqs: int
    num_tokens: int
    num_sampled: int
    host_block_tables: np.ndarray    # [B, W] int32 (CUDA-graph replay copies it)


class InputBuilder:
    """Turns a scheduled batch into StepInputs with little Python per sequence."""

    def __init__(self, block_size: int, max_model_len: int, device: str):
        self.bs = block_size
        self.width = -(-max_model_len // block_size)  # blocks per sequence at most
        self.device = torch.device(device)
        self.pin = self.device.type == "cuda"
        self.table = np.zeros((64, self.width), dtype=np.int32)
        self.epoch = np.full(64, -1, dtype=np.int64)  # kv_epoch each row was synced at
        self.synced = np.zeros(64, dtype=np.int64)    # block-table entries copied into the row
        self.row_of: dict[int, int] = {}
        self.free_rows: list[int] = []
        self.num_rows = 0
        self._staging: torch.Tensor | None = None
        self._copied: torch.cuda.Event | None = None  # the last copy out of the staging buffer
        self._temps: tuple[list[float], torch.Tensor | None] = ([], None)  # last step's
        self._top_ps: tuple[list[float], torch.Tensor | None] = ([], None)

    def release(self, seq: Sequence) -> None:
        """Forget a finished sequence's row."""
        r = self.row_of.pop(seq.seq_id, None)
        if r is not None:
            self.free_rows.append(r)

    def _row(self, seq: Sequence) -> int:
        if self.free_rows:
            r = self.free_rows.pop()
        else:
            r = self.num_rows
            self.num_rows += 1
            if r >= self.table.shape[0]:
                n = 2 * self.table.shape[0]
                self.table = np.resize(self.table, (n, self.width))
                self.epoch = np.resize(self.epoch, n)
                self.synced = np.resize(self.synced, n)
        self.epoch[r], self.synced[r] = -1, 0
        self.row_of[seq.seq_id] = r
        return r

    def _sync(self, seqs: list[Sequence], rows: np.ndarray, lens: np.ndarray,
              epochs: np.ndarray, stale: np.ndarray) -> None:
        """Copy the new block-table entries of the `stale` rows into the table."""
        idx = np.flatnonzero(stale)
        r = rows[idx]
        if int(lens[idx].max()) > self.width:
            i = int(idx[np.argmax(lens[idx])])
            raise RuntimeError(f"{seqs[i]}: {int(lens[i])} blocks exceed max_model_len's "
                               f"{self.width}")
        # the common case, vectorised: one block appended since the last sync
        one = (self.epoch[r] == epochs[idx]) & (lens[idx] == self.synced[r] + 1)
        if one.any():
            i1, r1 = idx[one], r[one]
            self.table[r1, self.synced[r1]] = [seqs[i].block_table[-1] for i in i1.tolist()]
        for i in idx[~one].tolist():  # new rows, re-allocated tables, several new blocks
            row, seq = int(rows[i]), seqs[i]
            start = int(self.synced[row]) if self.epoch[row] == epochs[i] else 0
            table = seq.block_table
            self.table[row, start:len(table)] = table[start:]
        self.synced[r], self.epoch[r] = lens[idx], epochs[idx]

    def prepare(self, batch: list[tuple[Sequence, int]]) -> StepInputs:
        """Device inputs for `batch` (the scheduler's output, already allocated)."""
        # one list comprehension per field: this runs for every sequence of every step
        seqs = [p[0] for p in batch]
        ns = [p[1] for p in batch]
        row_of = self.row_of
        rows = [row_of.get(s.seq_id, -1) for s in seqs]
        if -1 in rows:
            rows = [r if r >= 0 else self._row(s) for s, r in zip(seqs, rows)]
        rows_np = np.array(rows, dtype=np.intp)
        lens = np.array([len(s.block_table) for s in seqs], dtype=np.int64)
        epochs = np.array([s.kv_epoch for s in seqs], dtype=np.int64)
        stale = (self.synced[rows_np] != lens) | (self.epoch[rows_np] != epochs)
        if stale.any():
            self._sync(seqs, rows_np, lens, epochs, stale)
        ncs = [s.num_computed_tokens for s in seqs]
        decode = ns.count(1) == len(ns)
        if decode:
            ids = [s.token_ids[nc] for s, nc in zip(seqs, ncs)]
        else:
            ids = []
            for s, nc, n in zip(seqs, ncs, ns):
                ids.extend(s.token_ids[nc:nc + n])
        ntoks = np.array([len(s.token_ids) for s in seqs], dtype=np.int32)
        return self._tensors(decode, seqs, rows_np, ncs, ns, ids, ntoks)

    def _tensors(self, decode: bool, seqs: list[Sequence], rows_np: np.ndarray,
                 ncs: list[int], ns: list[int], ids: list[int],
                 ntoks: np.ndarray) -> StepInputs:
        bs = self.bs
        b = len(seqs)
        nc = np.array(ncs, dtype=np.int32)
        n = np.array(ns, dtype=np.int32)
        ctx = nc + n
        w = int(-(-int(ctx.max()) // bs))
        tables = self.table[rows_np, :w]  # [B, W]
        is_sampled = ctx == ntoks
        all_sampled = bool(is_sampled.all())
        sampled = None if all_sampled else np.flatnonzero(is_sampled)
        if decode:
            pos = nc
            slots = tables[np.arange(b), pos // bs] * bs + pos % bs
            cu = None
        else:
            cu = np.zeros(b + 1, dtype=np.int32)
            np.cumsum(n, out=cu[1:])
            starts = np.repeat(cu[:-1] - nc, n)
            pos = (np.arange(int(cu[-1]), dtype=np.int32) - starts).astype(np.int32)
            slots = self.table[np.repeat(rows_np, n), pos // bs] * bs + pos % bs
        lidx = None if (decode and all_sampled) else (
            (cu[1:] - 1)[is_sampled] if cu is not None else sampled)
        parts = [np.asarray(ids, dtype=np.int32), pos, slots.astype(np.int32), ctx,
                 tables.reshape(-1)]
        if cu is not None:
            parts.append(cu)
        if lidx is not None:
            parts.append(lidx.astype(np.int32))
        flat = self._to_device(np.concatenate(parts))
        t = len(ids)
        views, off = [], 0
        for size in (t, t, t, b, b * w):
            views.append(flat[off:off + size])
            off += size
        cu_t = None
        if cu is not None:
            cu_t, off = flat[off:off + b + 1], off + b + 1
        lidx_t = flat[off:off + len(lidx)] if lidx is not None else None
        num_sampled = b if sampled is None else len(sampled)
        temps = top_ps = None
        if num_sampled:
            live = [s.sampling_params for s in seqs]
            if sampled is not None:
                live = [live[i] for i in sampled.tolist()]
            tl = [sp.temperature for sp in live]
            if max(tl) > 0:
                temps = self._cached_floats("_temps", tl)
                pl = [sp.top_p for sp in live]
                if min(pl) < 1.0:
                    top_ps = self._cached_floats("_top_ps", pl)
        meta = AttnMeta(decode, views[2], views[3], views[4].view(b, w), cu_t,
                        int(n.max()))
        return StepInputs(views[0], views[1], meta, lidx_t, temps, top_ps, b, t,
                          num_sampled, tables)

    def _cached_floats(self, attr: str, values: list[float]) -> torch.Tensor:
        """`values` on the device, reusing last step's tensor when they are the same."""
        old, tensor = getattr(self, attr)
        if tensor is None or old != values:  # nobody writes these tensors: safe to reuse
            tensor = self._floats(values)
            setattr(self, attr, (values, tensor))
        return tensor

    def _to_device(self, arr: np.ndarray) -> torch.Tensor:
        host = torch.from_numpy(arr)
        if not self.pin:
            return host
        size = arr.size
        if self._copied is not None:
            self._copied.synchronize()  # the previous step's copy has left the pinned buffer
        if self._staging is None or self._staging.numel() < size:
            self._staging = torch.empty(max(size, 1 << 16), dtype=torch.int32, pin_memory=True)
        buf = self._staging[:size]
        buf.copy_(host)
        out = buf.to(self.device, non_blocking=True)
        if self._copied is None:
            self._copied = torch.cuda.Event()
        self._copied.record()
        return out

    def _floats(self, values: list[float]) -> torch.Tensor:
        t = torch.tensor(values, dtype=torch.float32)
        return t.to(self.device, non_blocking=True) if self.pin else t
