"""Grain loading: a task's examples --> fixed-shape numpy batches (train) or padded sources (eval).

Training batches (`train_batches`), b = batch_size // shard_count rows, S = max_src_len + 1,
T = max_tgt_len + 1, all int32:

    src      [b, S]   source tokens, EOS, PAD...
    tgt_in   [b, T]   BOS, target tokens, PAD...      (decoder input, teacher forcing)
    tgt_out  [b, T]   target tokens, EOS, PAD...      (labels; PAD = no loss)

With `pack=True` a row holds several whole examples (first-fit; none is split across rows) and
four more [b, S] / [b, T] arrays say where each lies: `src_segment_ids`, `tgt_segment_ids`
(1, 2, ... per example in the row, 0 = padding; segment k of src and of tgt is the same example)
and `src_positions`, `tgt_positions` (0, 1, ... restarting at each example).

Order of operations (each process builds the same chain on its own shard):

    source
      -> drop the too long ones (counted)      one tokenizing pass, the same on every process
      -> shuffle(seed) per epoch, repeat forever: one global order
      -> tokenize, add BOS/EOS
      -> unpacked: pad to S / T, batch b rows, keep every P-th batch from the process index:
         the global batch (P processes x b rows) is the same whatever the process count P
      -> packed: keep every P-th example, pack into rows of S / T, batch b rows
      -> bucketed (bucket_width > 0): windows of `bucket_window` global batches sorted by
         length, cut into batches, batch order shuffled per window; each global batch padded
         to multiples of bucket_width (S' <= S, T' <= T, the same on every process); process p
         takes rows p*b .. p*b+b-1

The iterator is checkpointable: `get_state()` is a small JSON-serializable dict and, after
`set_state(state)`, a fresh iterator yields exactly the batches the saved one would have.
"""
from __future__ import annotations

import json
import weakref
from typing import Any, Iterator, Sequence

import grain
import numpy as np
from absl import logging

from encdec.errors import ConfigError
from encdec.data.base import EvalExample, special_tokens
from encdec.data.tokenizers import SpecialTokens

_PASS_CHUNK = 4096  # examples tokenized at a time in the length-filter pass
_CACHED_WINDOWS = 4  # length-bucketing windows kept around the latest one (reader threads)
_MIN_PACKING_BINS = 64  # rows packed at once: more bins, fuller rows (a batch takes b of them)
_PACKED_KEYS = {"src": "src", "src_segment_ids": "src_segment_ids",
                "src_positions": "src_positions", "tgt_in": "tgt_in", "tgt_out": "tgt_out",
                "tgt_in_segment_ids": "tgt_segment_ids", "tgt_in_positions": "tgt_positions"}


def example_arrays(src_ids: Sequence[int], tgt_ids: Sequence[int], special: SpecialTokens
                   ) -> dict[str, np.ndarray]:
  """Token ids --> {"src": src+EOS, "tgt_in": BOS+tgt, "tgt_out": tgt+EOS} (int32, unpadded)."""
  src = np.asarray(list(src_ids) + [special.eos], np.int32)          # [n + 1]
  tgt = np.asarray(tgt_ids, np.int32)                                # [m]
  return {"src": src,
          "tgt_in": np.concatenate([np.asarray([special.bos], np.int32), tgt]),   # [m + 1]
          "tgt_out": np.concatenate([tgt, np.asarray([special.eos], np.int32)])}  # [m + 1]


def pad_to(x: np.ndarray, length: int, pad_id: int) -> np.ndarray:
  """[n] --> [length] with `pad_id` on the right (n <= length)."""
  out = np.full(length, pad_id, x.dtype)           # np.pad costs ~8x this per call
  out[:len(x)] = x
  return out


def _encode_all(tokenizer, texts: list[str]) -> list[list[int]]:
  batch = getattr(tokenizer, "encode_batch", None)
  return batch(texts) if batch is not None else [tokenizer.encode(t) for t in texts]


def token_lengths(task, source) -> np.ndarray:
  """[N, 2]: the tokenized (source, target) lengths of every example of source (one pass)."""
  lengths = []
  for start in range(0, len(source), _PASS_CHUNK):
    rows = [source[i] for i in range(start, min(start + _PASS_CHUNK, len(source)))]
    src = _encode_all(task.src_tokenizer, [r["src"] for r in rows])
    tgt = _encode_all(task.tgt_tokenizer, [r["tgt"] for r in rows])
    lengths.extend((len(s), len(t)) for s, t in zip(src, tgt))
  return np.asarray(lengths, np.int64).reshape(-1, 2)


class EncodeExample:
  """Source index --> example_arrays of that example (a grain map function)."""

  def __init__(self, task, source):
    self._src_tok, self._tgt_tok, self._source = task.src_tokenizer, task.tgt_tokenizer, source
    self._special = special_tokens(task)

  def __call__(self, index) -> dict[str, np.ndarray]:
    row = self._source[int(index)]
    return example_arrays(self._src_tok.encode(row["src"]), self._tgt_tok.encode(row["tgt"]),
                          self._special)


class PadExample:
  """example_arrays --> the same padded to S (src) and T (tgt_in, tgt_out)."""

  def __init__(self, src_len: int, tgt_len: int, pad_id: int):
    self._lengths = {"src": src_len, "tgt_in": tgt_len, "tgt_out": tgt_len}
    self._pad_id = pad_id

  def __call__(self, ex: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: pad_to(v, self._lengths[k], self._pad_id) for k, v in ex.items()}


class BucketedBatch:
  """Global batch k --> its source indices [B], when batches are length-bucketed.

  The shuffled stream is cut into windows of `window` global batches; within a window the
  examples are sorted by (source, target) length and cut into batches, whose order is then
  shuffled (by the seed and the window's index). So each batch holds examples of similar
  length, every example still comes once per epoch, and batch k depends only on (seed, k).
  """

  def __init__(self, stream, lengths: np.ndarray, rows: int, window: int, seed: int):
    self._stream, self._lengths, self._rows, self._window = stream, lengths, rows, window
    self._seed = seed
    self._cached: dict[int, np.ndarray] = {}   # window index -> its batches [W, B]

  def _batches_of_window(self, w: int) -> np.ndarray:
    batches = self._cached.get(w)
    if batches is not None:
      return batches
    size = self._window * self._rows
    indices = np.array([self._stream[w * size + j] for j in range(size)], np.int64)
    lengths = self._lengths[indices]                                     # [W*B, 2]
    by_length = indices[np.lexsort((lengths[:, 1], lengths[:, 0]))]    # sources, then targets
    batches = by_length.reshape(self._window, self._rows)               # [W, B]
    order = np.random.default_rng([self._seed % 2**32, w]).permutation(self._window)
    batches = batches[order]
    # grain's reader threads work on neighbouring windows at once: keep those, replaced in one
    # assignment (threads that race compute the same batches).
    nearby = {v: b for v, b in self._cached.items() if abs(v - w) < _CACHED_WINDOWS}
    self._cached = {**nearby, w: batches}
    return batches

  def __call__(self, k) -> np.ndarray:
    return self._batches_of_window(int(k) // self._window)[int(k) % self._window]


class PadBucketedBatch:
  """Source indices of a global batch [B] --> this process's rows of it, padded to the
  smallest multiple of `width` that holds the batch's longest source (target) with its EOS
  (BOS), at most S (T). Every process computes the same widths from the whole batch."""

  def __init__(self, task, source, lengths: np.ndarray, width: int, src_len: int,
               tgt_len: int, rows: slice):
    self._encode, self._lengths, self._width = EncodeExample(task, source), lengths, width
    self._max = (src_len, tgt_len)
    self._rows, self._pad_id = rows, special_tokens(task).pad

  def widths(self, indices: np.ndarray) -> tuple[int, int]:
    longest = self._lengths[indices].max(axis=0) + 1                    # + EOS / BOS
    return tuple(int(min(-(-n // self._width) * self._width, most))
                 for n, most in zip(longest, self._max))

  def __call__(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    src_w, tgt_w = self.widths(indices)                                 # S', T'
    pad = PadExample(src_w, tgt_w, self._pad_id)
    examples = [pad(self._encode(i)) for i in indices[self._rows]]
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}  # {k: [b, S' or T']}


class RenamePacked:
  """grain's packed rows --> ours: our keys (tgt_in's segment ids/positions are the target's),
  and `pad_id` where grain left zeros after the last packed example."""

  def __init__(self, pad_id: int):
    self._pad_id = pad_id

  def __call__(self, row: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {ours: np.asarray(row[theirs], np.int32) for theirs, ours in _PACKED_KEYS.items()}
    for tokens, segments in (("src", "src_segment_ids"), ("tgt_in", "tgt_segment_ids"),
                             ("tgt_out", "tgt_segment_ids")):
      out[tokens] = np.where(out[segments] == 0, self._pad_id, out[tokens])
    return out


class TrainIterator:
  """Infinite iterator of training batches with checkpointable state and drop counts.

  Attributes:
    num_examples: examples in the split (before length filtering).
    num_dropped: how many of those were dropped for exceeding max_src_len / max_tgt_len.
  """

  def __init__(self, iterator, *, num_examples: int, num_dropped: int,
               fingerprint: dict[str, Any]):
    self._holder = [iterator]  # emptied by close(): see _close_iterator
    self.num_examples = num_examples
    self.num_dropped = num_dropped
    self.fingerprint = fingerprint
    # Stop the prefetch thread when this iterator is collected or, at the latest, at exit.
    self._finalizer = weakref.finalize(self, _close_iterator, self._holder)

  def close(self) -> None:
    """Stop background prefetching (the iterator cannot be used afterwards)."""
    self._finalizer()

  def __iter__(self) -> "TrainIterator":
    return self

  @property
  def _iterator(self):
    if not self._holder:
      raise ValueError("this TrainIterator was closed; build a new one with train_batches")
    return self._holder[0]

  def __next__(self) -> dict[str, np.ndarray]:
    return next(self._iterator)

  def get_state(self) -> dict[str, Any]:
    """The position in the data stream as a JSON-serializable dict."""
    state = {"fingerprint": self.fingerprint, "grain": self._iterator.get_state()}
    return json.loads(json.dumps(state, default=_json_default))

  def set_state(self, state: dict[str, Any]) -> None:
    """Resume from `get_state()` output of an iterator built with the same arguments."""
    if not isinstance(state, dict) or "grain" not in state:
      raise ConfigError("data iterator state lacks 'grain'; pass a dict from get_state()")
    saved = state.get("fingerprint")
    if saved != self.fingerprint:
      diff = {k: (saved or {}).get(k) for k in self.fingerprint
              if (saved or {}).get(k) != self.fingerprint[k]}
      raise ConfigError(f"data iterator state was saved with other data settings {diff} (now "
                        f"{ {k: self.fingerprint[k] for k in diff} }); resume with the same "
                        "task, batch size, seed, packing (and, if packed, process count)")
    self._iterator.set_state(state["grain"])


def _close_iterator(holder: list) -> None:
  """Close the grain iterator and drop it, so that it is freed now rather than at interpreter
  teardown (where grain's prefetch __del__ fails noisily on already-cleared modules)."""
  if holder:
    holder.pop().close()


def _json_default(x):
  if isinstance(x, np.generic):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  raise TypeError(f"data iterator state holds a {type(x).__name__}, not JSON-serializable")


def train_batches(task, task_cfg, *, split: str = "train", batch_size: int, seed: int,
                  pack: bool = False, bucket_width: int = 0, bucket_window: int = 64,
                  shard_index: int = 0, shard_count: int = 1) -> TrainIterator:
  """Endless, reshuffled-per-epoch batches of this process's shard (see module docstring).

  `bucket_width` > 0 (unpacked only): length bucketing, see BucketedBatch and PadBucketedBatch;
  batches are then [b, S'] / [b, T'] with S' <= S, T' <= T multiples of `bucket_width` (or S, T).
  """
  if shard_count < 1 or not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index={shard_index}, shard_count={shard_count}: need "
                     "0 <= shard_index < shard_count")
  if batch_size < 1 or batch_size % shard_count:
    raise ConfigError(f"batch_size={batch_size} must be a positive multiple of the process count "
                      f"{shard_count}; change train.batch_size")
  rows = batch_size // shard_count                                      # b
  max_src, max_tgt = task_cfg.max_src_len, task_cfg.max_tgt_len
  src_len, tgt_len = max_src + 1, max_tgt + 1                          # S, T
  pad_id = special_tokens(task).pad

  if bucket_width < 0 or bucket_window < 1:
    raise ConfigError(f"train.bucket_width={bucket_width} must be >= 0 and "
                      f"train.bucket_window={bucket_window} >= 1")
  if pack and bucket_width:
    raise ConfigError("train.pack and train.bucket_width are two ways to cut padding; set one "
                      "(train.bucket_width=0 or train.pack=False)")
  source = task.train_source(split)
  lengths = token_lengths(task, source)                              # [N, 2]
  keep = np.flatnonzero((lengths[:, 0] <= max_src) & (lengths[:, 1] <= max_tgt))
  num_dropped = len(source) - len(keep)
  logging.info("data %s/%s: dropped %d of %d examples longer than max_src_len=%d or "
               "max_tgt_len=%d", task.name, split, num_dropped, len(source), max_src, max_tgt)
  if len(keep) == 0:
    raise ConfigError(f"no {split} example of task {task.name!r} fits max_src_len={max_src} / "
                      f"max_tgt_len={max_tgt}; raise task.max_src_len / task.max_tgt_len")

  # One global order (the same on every process), reshuffled per epoch.
  stream = grain.MapDataset.source(keep).shuffle(seed=seed % 2**32).repeat()
  read = grain.ReadOptions(num_threads=2, prefetch_buffer_size=2 * rows)
  if pack:
    # Each process packs its own interleaved slice of the stream.
    # Read in the packer's own thread: its elements are single examples, and handing each to
    # grain's reader threads costs more than encoding it (1.8x the batches/s without them).
    ds = (stream[shard_index::shard_count].map(EncodeExample(task, source))
          .to_iter_dataset(grain.ReadOptions(num_threads=0)))
    ds = grain.experimental.FirstFitPackIterDataset(
        ds, length_struct={"src": src_len, "tgt_in": tgt_len, "tgt_out": tgt_len},
        num_packing_bins=max(rows, _MIN_PACKING_BINS), shuffle_bins=False
    ).map(RenamePacked(pad_id))
    ds = ds.batch(rows, drop_remainder=True)                            # {k: [b, S or T]}
  elif bucket_width:
    # Global batch k: B examples of similar length; process p takes rows p*b .. p*b+b-1.
    ds = (grain.MapDataset.range(len(stream) // batch_size)
          .map(BucketedBatch(stream, lengths, batch_size, bucket_window, seed))
          .map(PadBucketedBatch(task, source, lengths, bucket_width, src_len, tgt_len,
                                slice(shard_index * rows, (shard_index + 1) * rows)))
          .to_iter_dataset(read))
  else:
    # Global batch k = blocks k*P .. k*P+P-1 of b consecutive examples; process p takes block
    # k*P+p. So the global batch, row for row, does not depend on the process count.
    ds = (stream.map(EncodeExample(task, source)).map(PadExample(src_len, tgt_len, pad_id))
          .batch(rows)[shard_index::shard_count].to_iter_dataset(read))
  ds = grain.experimental.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=2)  # overlap steps
  fingerprint = dict(task=task.name, split=split, batch_size=batch_size, seed=seed, pack=pack,
                     max_src_len=max_src, max_tgt_len=max_tgt)
  if pack:  # packed positions depend on the process count; unpacked ones do not
    fingerprint["shard_count"] = shard_count
  if bucket_width:
    fingerprint.update(bucket_width=bucket_width, bucket_window=bucket_window)
  return TrainIterator(iter(ds), num_examples=len(source), num_dropped=num_dropped,
                       fingerprint=fingerprint)


def eval_batches(task, task_cfg, split: str, *, batch_size: int
                 ) -> Iterator[tuple[np.ndarray, list[EvalExample]]]:
  """(src [batch_size, S], examples) over ALL of `split`, in order; the last batch PAD-filled.

  Nothing is dropped or truncated, so metrics cover the full split: S = max(max_src_len + 1,
  longest tokenized source in the split + 1) (e.g. test_long gets a wider S than training).
  Rows past len(examples) in the last batch are all PAD.
  """
  if batch_size < 1:
    raise ConfigError(f"eval batch_size={batch_size} must be positive; change eval.batch_size")
  examples = task.eval_examples(split)
  ids = _encode_all(task.src_tokenizer, [e.src for e in examples])
  src_len = max([task_cfg.max_src_len] + [len(x) for x in ids]) + 1    # S
  special = special_tokens(task)
  for start in range(0, len(examples), batch_size):
    src = np.full((batch_size, src_len), special.pad, np.int32)         # [batch_size, S]
    for row, x in enumerate(ids[start:start + batch_size]):
      src[row, :len(x)] = x
      src[row, len(x)] = special.eos
    yield src, examples[start:start + batch_size]


def reference_batches(task, task_cfg, split: str, *, batch_size: int, max_examples: int = 0
                      ) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
  """Teacher-forcing batches of every (example, reference) pair of the first `max_examples`
  (0: all) examples of `split`, in order: ({"src" [batch_size, S], "tgt_in", "tgt_out"
  [batch_size, T]}, owner [batch_size]: each row's example index, -1 for the last batch's PAD
  rows).

  Nothing is dropped or truncated: S = max(max_src_len, longest tokenized source) + 1 as in
  eval_batches, T = max(max_tgt_len, longest tokenized reference) + 1.
  """
  if batch_size < 1:
    raise ConfigError(f"eval batch_size={batch_size} must be positive; change eval.batch_size")
  examples = task.eval_examples(split)
  examples = examples[:max_examples] if max_examples else examples
  pairs = [(index, ref) for index, example in enumerate(examples) for ref in example.refs]
  src_ids = _encode_all(task.src_tokenizer, [e.src for e in examples])
  tgt_ids = _encode_all(task.tgt_tokenizer, [ref for _, ref in pairs])
  src_len = max([task_cfg.max_src_len] + [len(x) for x in src_ids]) + 1    # S
  tgt_len = max([task_cfg.max_tgt_len] + [len(x) for x in tgt_ids]) + 1    # T
  special = special_tokens(task)
  pad = PadExample(src_len, tgt_len, special.pad)
  filler = pad(example_arrays([], [], special))
  filler["tgt_out"][:] = special.pad                                       # no token counts
  for start in range(0, len(pairs), batch_size):
    chunk = range(start, min(start + batch_size, len(pairs)))
    rows = [pad(example_arrays(src_ids[pairs[k][0]], tgt_ids[k], special)) for k in chunk]
    rows += [filler] * (batch_size - len(rows))
    owner = np.full(batch_size, -1, np.int64)                               # [batch_size]
    owner[:len(chunk)] = [pairs[k][0] for k in chunk]
    yield {key: np.stack([row[key] for row in rows]) for key in rows[0]}, owner
