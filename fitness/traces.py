"""Request traces as workloads: `trace:PATH?key=value&...` (docs/TRACES.md says it all).

A trace gives, per request, an arrival time and input and output lengths, and which
prompts share a prefix: Mooncake JSONL rows (`timestamp` ms, `input_length`,
`output_length`, `hash_ids`: one id per 512-token block, equal ids for equal blocks) or
plain CSV/JSONL rows (`arrival_s`, `input_tokens`, `output_tokens`[, `prefix_group`,
`prefix_tokens`]). Token ids are synthesized deterministically: a block's tokens from its
hash id, a group's prefix from the group's name, a request's private tail from its line
number, so shared ids give identical tokens (prefix-cache hits) and a changed file gives
a changed content hash. The realized output length becomes `Request.output_len`;
`max_tokens` is only the cap (`cap=pow2` or `cap=N`), as a real server is given.

Every defect is a `TraceError` whose message is one line, `FILE:LINE: what was wrong`
(a bad spec: fitness/tracespec.py, which parses the `?key=value` options).
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fitness.tracespec import VOCAB, TraceError, TraceOptions, parse_spec
from fitness.workloads import Request, Workload, _finish

MOONCAKE_KEYS = ("timestamp", "input_length", "output_length", "hash_ids")
_REPO = Path(__file__).resolve().parents[1]  # relative paths also resolve from here
_CACHE: dict[tuple[Any, ...], TraceLoad] = {}
_CACHE_MAX = 16


@dataclass(frozen=True, slots=True)
class SkippedRow:
    """A malformed row left out under `skip_bad=1`: its line and what was wrong."""

    line: int
    reason: str


@dataclass(frozen=True, slots=True)
class TraceLoad:
    """A loaded trace: the workload, the file, its format and any rows skipped."""

    workload: Workload
    path: Path
    format: str                    # "mooncake" or "plain"
    skipped: tuple[SkippedRow, ...]


@dataclass(frozen=True, slots=True)
class _Row:
    line: int
    t_s: float
    input_len: int
    output_len: int
    hash_ids: tuple[int, ...] = ()
    group: str | None = None
    prefix_tokens: int | None = None


class _RowError(Exception):
    """A bad row (line, reason); skippable under skip_bad."""


# ----------------------------------------------------------------------------- the file


def _resolve(spec: str, written: str) -> Path:
    p = Path(written).expanduser()
    if not p.is_absolute() and not p.exists() and (_REPO / p).exists():
        p = _REPO / p  # workers run in a temporary directory; repo-relative paths still work
    if not p.exists():
        raise TraceError(f"{written}: trace file not found (from spec {spec!r}; relative "
                         f"paths are tried from the working directory and from {_REPO})")
    return p.resolve()


# ----------------------------------------------------------------------------- rows


def _show(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


def _int(row: dict[str, Any], key: str, lo: int) -> int:
    v = row[key]
    if isinstance(v, str):
        try:
            v = int(v.strip())
        except ValueError:
            raise _RowError(f"{key} must be an integer >= {lo}, got {_show(row[key])}") from None
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise _RowError(f"{key} must be an integer >= {lo}, got {_show(row[key])}")
    return v


def _time(row: dict[str, Any], key: str) -> float:
    v = row[key]
    try:
        t = float(v.strip()) if isinstance(v, str) else v
    except ValueError:
        t = None
    if not isinstance(t, int | float) or isinstance(t, bool) or not math.isfinite(t):
        raise _RowError(f"{key} must be a number, got {_show(v)}")
    if t < 0:
        raise _RowError(f"{key} must not be negative, got {_show(v)}")
    return float(t)


def _need(row: dict[str, Any], keys: tuple[str, ...]) -> None:
    missing = [k for k in keys if row.get(k) in (None, "")]
    if missing:
        raise _RowError(f"missing field {', '.join(missing)} (have {', '.join(map(str, row))})")


def _mooncake_row(line: int, row: dict[str, Any], block: int) -> _Row:
    _need(row, MOONCAKE_KEYS)
    ids = row["hash_ids"]
    if not isinstance(ids, list) or any(not isinstance(h, int) or isinstance(h, bool)
                                        for h in ids):
        raise _RowError(f"hash_ids must be a list of integers, got {_show(ids)}")
    n_in = _int(row, "input_length", 1)
    if len(ids) > -(-n_in // block):
        raise _RowError(f"hash_ids has {len(ids)} blocks but input_length {n_in} fills at "
                        f"most {-(-n_in // block)} blocks of {block} tokens (option block)")
    return _Row(line, _time(row, "timestamp") / 1000.0, n_in, _int(row, "output_length", 0),
                hash_ids=tuple(ids))


def _plain_row(line: int, row: dict[str, Any]) -> _Row:
    _need(row, ("arrival_s", "input_tokens", "output_tokens"))
    n_in = _int(row, "input_tokens", 1)
    g = row.get("prefix_group")
    group = None if g is None or (isinstance(g, str) and not g.strip()) else str(g).strip()
    pt = None if row.get("prefix_tokens") in (None, "") else _int(row, "prefix_tokens", 0)
    if pt is not None and group is None:
        raise _RowError("prefix_tokens needs a prefix_group to share the prefix with")
    if pt is not None and pt > n_in:
        raise _RowError(f"prefix_tokens {pt} exceeds input_tokens {n_in}")
    return _Row(line, _time(row, "arrival_s"), n_in, _int(row, "output_tokens", 0),
                group=group, prefix_tokens=pt)


def _read_rows(path: Path, text: str, opts: TraceOptions) -> tuple[str, list[_Row],
                                                                    list[SkippedRow]]:
    rows: list[_Row] = []
    skipped: list[SkippedRow] = []
    first = text.lstrip()[:1]
    is_csv = path.suffix.lower() == ".csv" or (path.suffix.lower() not in
                                                (".jsonl", ".json", ".ndjson") and first != "{")
    fmt = "plain" if is_csv else ""

    def bad(line: int, reason: str) -> None:
        if not opts.skip_bad:
            raise TraceError(f"{path}:{line}: {reason}")
        skipped.append(SkippedRow(line, reason))

    if is_csv:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = reader.fieldnames or []
        missing = [k for k in ("arrival_s", "input_tokens", "output_tokens") if k not in header]
        if missing:
            raise TraceError(f"{path}:1: CSV header lacks {', '.join(missing)}; expected "
                             "arrival_s,input_tokens,output_tokens[,prefix_group,prefix_tokens]")
        try:
            for row in reader:
                line = reader.line_num
                try:
                    if None in row or None in row.values():
                        got = (len(header) + len(row[None]) if None in row  # type: ignore[index]
                               else sum(v is not None for v in row.values()))
                        raise _RowError(f"expected {len(header)} comma-separated fields, "
                                        f"got {got}")
                    rows.append(_plain_row(line, row))
                except _RowError as e:
                    bad(line, str(e))
        except csv.Error as e:
            raise TraceError(f"{path}:{reader.line_num}: malformed CSV: {e}") from None
        return fmt, rows, skipped
    for line, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as e:
                raise _RowError(f"malformed JSON: {e.msg} at column {e.colno}") from None
            if not isinstance(row, dict):
                raise _RowError(f"expected one JSON object per line, got {_show(row)}")
            if not fmt:  # the first object decides: Mooncake keys, else plain columns
                fmt = "mooncake" if any(k in row for k in MOONCAKE_KEYS) else "plain"
            rows.append(_mooncake_row(line, row, opts.block) if fmt == "mooncake"
                        else _plain_row(line, row))
        except _RowError as e:
            bad(line, str(e))
    return fmt or "plain", rows, skipped


# ----------------------------------------------------------------------------- tokens


def _stream(seed: str, n: int, vocab: int) -> list[int]:
    # choices() draws one random() per item, so a shorter stream is a prefix of a longer one
    return random.Random(seed).choices(range(vocab), k=n)


def _scaled(n: int, s: float) -> int:
    return max(1, round(n * s))


def _prompt(row: _Row, opts: TraceOptions, fmt: str, groups: dict[str, int],
            memo: dict[str, list[int]]) -> list[int]:
    vocab, s = VOCAB[opts.model], opts.length_scale

    def shared(seed: str, n: int) -> list[int]:
        if len(memo.get(seed, ())) < n:
            memo[seed] = _stream(seed, n, vocab)
        return memo[seed][:n]

    tokens: list[int] = []
    if fmt == "mooncake":  # block i holds tokens [i*block, (i+1)*block); the last may be short
        bs = _scaled(opts.block, s)
        for i, h in enumerate(row.hash_ids):
            n = min(opts.block, row.input_len - i * opts.block)
            tokens += shared(f"block:{h}", bs if n == opts.block else min(bs, _scaled(n, s)))
        tail = row.input_len - len(row.hash_ids) * opts.block
        tail = _scaled(tail, s) if tail > 0 else 0
    else:
        n_in = _scaled(row.input_len, s)
        if row.group is not None:
            share = groups[row.group] if row.prefix_tokens is None else row.prefix_tokens
            tokens += shared(f"group:{row.group}", min(n_in, round(share * s)))
        tail = n_in - len(tokens)
    return tokens + _stream(f"row:{row.line}", tail, vocab)


def _request(row: _Row, prompt: list[int], t0: float, path: Path,
             opts: TraceOptions) -> Request:
    realized = _scaled(row.output_len, opts.length_scale)  # 0 in the trace: 1 token
    room = opts.max_model_len - len(prompt)
    if opts.cap is None:
        cap = min(1 << (realized - 1).bit_length(), room)  # clipped as a server clips it
        ok = realized <= room
    else:
        realized, cap = min(realized, opts.cap), opts.cap
        ok = cap <= room
    if not ok:
        need = realized if opts.cap is None else cap
        raise TraceError(f"{path}:{row.line}: prompt {len(prompt)} + output {need} tokens "
                         f"exceed max_model_len {opts.max_model_len} (length_scale "
                         f"{opts.length_scale:g}); raise max_model_len or lower length_scale")
    return Request(tuple(prompt), temperature=0.6, max_tokens=cap, ignore_eos=False,
                   arrival_s=round((row.t_s - t0) * opts.time_scale, 6), output_len=realized)


# ----------------------------------------------------------------------------- loading


def _build(spec: str, path: Path, opts: TraceOptions) -> TraceLoad:
    try:
        text = path.read_bytes().decode("utf-8-sig")  # a BOM (spreadsheet CSVs) is dropped
    except UnicodeDecodeError as e:
        line = e.object[:e.start].count(b"\n") + 1
        raise TraceError(f"{path}:{line}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise TraceError(f"{path}: cannot read the trace: {e.strerror or e}") from None
    if not text.strip():
        raise TraceError(f"{path}: empty trace (no rows)")
    fmt, rows, skipped = _read_rows(path, text, opts)
    if not rows:
        raise TraceError(f"{path}: no usable rows ({len(skipped)} skipped as bad)")
    rows.sort(key=lambda r: r.t_s)  # stable: equal times keep file order
    stop = len(rows) if opts.count is None else opts.start + opts.count
    chosen = rows[opts.start:stop]
    if not chosen or stop > len(rows):
        raise TraceError(f"{path}: start={opts.start} count={opts.count} asks for rows past "
                         f"the {len(rows)} usable rows of the trace")
    groups: dict[str, int] = {}  # a group's default shared length: half its shortest prompt
    for r in rows:
        if r.group is not None:
            groups[r.group] = min(groups.get(r.group, r.input_len), r.input_len)
    groups = {g: n // 2 for g, n in groups.items()}
    memo: dict[str, list[int]] = {}
    reqs = [_request(r, _prompt(r, opts, fmt, groups, memo), chosen[0].t_s, path, opts)
            for r in chosen]
    span = reqs[-1].arrival_s
    desc = (f"{len(reqs)} requests from {path.name} ({fmt} trace, rows {opts.start}.."
            f"{opts.start + len(reqs) - 1} by time), {sum(len(q.prompt_token_ids) for q in reqs)}"
            f" prompt tokens, {sum(q.output_len or 0 for q in reqs)} realized output tokens, "
            f"arrivals over {span:g} s; skipped {len(skipped)} bad rows")
    overrides: dict[str, int] = {"max_model_len": opts.max_model_len}
    if opts.num_kv_blocks is not None:
        overrides["num_kv_blocks"] = opts.num_kv_blocks
    if opts.max_num_seqs is not None:
        overrides["max_num_seqs"] = opts.max_num_seqs
    w = _finish(spec, 1, reqs, opts.model, 0, overrides, desc)
    return TraceLoad(w, path, fmt, tuple(skipped))


def load_trace(spec: str) -> TraceLoad:
    """Load `trace:PATH?...` with its details (format, skipped rows); cached per file state."""
    written, opts = parse_spec(spec)
    path = _resolve(spec, written)
    try:
        st = path.stat()
    except OSError as e:
        raise TraceError(f"{path}: cannot read the trace: {e.strerror or e}") from None
    key = (str(path), st.st_mtime_ns, st.st_size, opts, spec)
    if key not in _CACHE:
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = _build(spec, path, opts)
    return _CACHE[key]


def load_trace_workload(spec: str) -> Workload:
    """The workload of `trace:PATH?...` (see docs/TRACES.md); raises TraceError if bad."""
    return load_trace(spec).workload


__all__ = ["MOONCAKE_KEYS", "SkippedRow", "TraceError", "TraceLoad", "TraceOptions", "load_trace",
           "load_trace_workload", "parse_spec"]
