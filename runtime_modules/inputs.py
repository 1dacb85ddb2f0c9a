"""Host-side batch preparation: from (sequence, n) pairs to the model's input tensors.

This is the per-step host work the engine cannot avoid, so it is vectorised: each
sequence's block table lives in a row of a persistent numpy array, synchronised only when
the sequence gains blocks or loses them (`kv_epoch`), and positions, slot mappings and
block tables are gathered with numpy. Every int32 input goes to the device in one copy.
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
        self.row_of: dict[int, int] = {}
        self.epoch: list[int] = []
        self.synced: list[int] = []  # block-table entries already copied into the row
        self.free_rows: list[int] = []
        self._staging: torch.Tensor | None = None
        self._copied: torch.cuda.Event | None = None  # the last copy out of the staging buffer

    def release(self, seq: Sequence) -> None:
        """Forget a finished sequence's row."""
        r = self.row_of.pop(seq.seq_id, None)
        if r is not None:
            self.free_rows.append(r)

    def _row(self, seq: Sequence) -> int:
        if self.free_rows:
            r = self.free_rows.pop()
            self.epoch[r], self.synced[r] = -1, 0
        else:
            r = len(self.epoch)
            self.epoch.append(-1)
            self.synced.append(0)
            if r >= self.table.shape[0]:
                grown = np.zeros((2 * self.table.shape[0], self.width), dtype=np.int32)
                grown[: self.table.shape[0]] = self.table
                self.table = grown
        self.row_of[seq.seq_id] = r
        return r

    def _sync(self, r: int, seq: Sequence) -> None:
        if self.epoch[r] != seq.kv_epoch:
            self.epoch[r], self.synced[r] = seq.kv_epoch, 0
        start, table = self.synced[r], seq.block_table
        if len(table) > self.width:
            raise RuntimeError(f"{seq}: {len(table)} blocks exceed max_model_len's "
                               f"{self.width}")
        self.table[r, start:len(table)] = table[start:]
        self.synced[r] = len(table)

    def prepare(self, batch: list[tuple[Sequence, int]]) -> StepInputs:
        """Device inputs for `batch` (the scheduler's output, already allocated)."""
        row_of, epoch, synced = self.row_of, self.epoch, self.synced
        rows: list[int] = []
        ncs: list[int] = []
        ns: list[int] = []
        ids: list[int] = []
        sps: list = []
        # bound methods: this loop runs once per sequence per step (host-overhead budget)
        add_row, add_nc, add_n, add_id, add_sp = (rows.append, ncs.append, ns.append,
                                                  ids.append, sps.append)
        decode = True
        for seq, n in batch:
            r = row_of.get(seq.seq_id)
            if r is None:
                r = self._row(seq)
            table = seq.block_table
            if synced[r] != len(table) or epoch[r] != seq.kv_epoch:
                self._sync(r, seq)
            nc = seq.num_computed_tokens
            toks = seq.token_ids
            add_row(r)
            add_nc(nc)
            add_n(n)
            if n == 1:
                add_id(toks[nc])
            else:
                decode = False
                ids.extend(toks[nc:nc + n])
            add_sp(seq.sampling_params if nc + n == len(toks) else None)
        return self._tensors(decode, rows, ncs, ns, ids, sps)

    def _tensors(self, decode, rows, ncs, ns, ids, sps) -> StepInputs:
        bs = self.bs
        b = len(rows)
        rows_np = np.asarray(rows, dtype=np.int64)
        nc = np.asarray(ncs, dtype=np.int32)
        n = np.asarray(ns, dtype=np.int32)
        ctx = nc + n
        w = int(-(-int(ctx.max()) // bs))
        tables = self.table[rows_np, :w]  # [B, W]
        sampled = [i for i, sp in enumerate(sps) if sp is not None]
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
        all_sampled = len(sampled) == b
        lidx = None if (decode and all_sampled) else (
            (cu[1:] - 1)[sampled] if cu is not None else np.asarray(sampled, dtype=np.int32))
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
        temps = top_ps = None
        live = [sps[i] for i in sampled]
        if any(sp.temperature > 0 for sp in live):
            temps = self._floats([sp.temperature for sp in live])
            if any(sp.top_p < 1.0 for sp in live):
                top_ps = self._floats([sp.top_p for sp in live])
        meta = AttnMeta(decode, views[2], views[3], views[4].view(b, w), cu_t,
                        int(n.max()))
        return StepInputs(views[0], views[1], meta, lidx_t, temps, top_ps, b, t,
                          len(sampled), tables)

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
