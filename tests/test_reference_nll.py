"""The references' NLL a final evaluation writes: each example's own, summed over its references,
equal to scoring the example alone; carried through the TSV into `encdec report`."""
import dataclasses
import functools

import jax
import numpy as np
import pytest

from encdec import assembly, config, evaluate, predictions_tsv
from encdec.data import pipeline, tasks
from encdec.data.base import EvalExample
from encdec.report import stats
from encdec.train import step as step_lib


class ManyReferences:
  """A task's eval examples with 1-3 references each, over a real task's tokenizers."""

  def __init__(self, task, examples):
    self._task, self._examples = task, examples

  def __getattr__(self, name):
    return getattr(self._task, name)

  def eval_examples(self, split):
    del split
    return self._examples


EXAMPLES = [EvalExample("abc", ("cba",)), EvalExample("ab", ("ba", "ab", "bba")),
            EvalExample("c", ("c", "cc")), EvalExample("bca", ("acb",)),
            EvalExample("aaaa", ("aaaa", "a"))]


def reverse_task(**overrides):
  cfg = config.load("configs/algorithmic.py:task=reverse",
                    {"task.max_len": 6, "model.d_model": 32, **overrides})
  return cfg, tasks.build(cfg.task)


def test_reference_batches_hold_every_reference_of_every_example_in_order():
  cfg, task = reverse_task()
  task = ManyReferences(task, EXAMPLES)
  batches = list(pipeline.reference_batches(task, cfg.task, "test", batch_size=4))
  pairs = [(i, ref) for i, e in enumerate(EXAMPLES) for ref in e.refs]     # 9 pairs
  assert len(batches) == 3 and all(b["src"].shape[0] == 4 for b, _ in batches)
  owners = np.concatenate([owner for _, owner in batches])
  assert owners.tolist() == [i for i, _ in pairs] + [-1, -1, -1]
  tok = task.tgt_tokenizer
  rows = [(b, r) for b, owner in batches for r in range(4)][:len(pairs)]
  pad = task.tgt_tokenizer.special.pad
  for (batch, r), (i, ref) in zip(rows, pairs):
    ids = [t for t in batch["tgt_out"][r].tolist() if t != pad]
    assert ids == tok.encode(ref) + [tok.special.eos]
    assert batch["tgt_in"][r][0] == tok.special.bos
    src = [t for t in batch["src"][r].tolist() if t != pad]
    assert src == task.src_tokenizer.encode(EXAMPLES[i].src) + [tok.special.eos]
  last, owner = batches[-1]
  assert (last["tgt_out"][owner < 0] == pad).all()            # PAD rows: no tokens to count


def test_reference_nll_sums_each_examples_references_and_skips_padding_rows():
  cfg, task = reverse_task()
  task = ManyReferences(task, EXAMPLES)
  pad = task.tgt_tokenizer.special.pad

  def fake_nll(batch):      # [members=2, B, 2]: "nll" = sum of target ids, tokens = their count
    real = batch["tgt_out"] != pad
    one = np.stack([(batch["tgt_out"] * real).sum(-1), real.sum(-1)], -1).astype(float)
    return np.stack([one, 2 * one])

  got = evaluate.reference_nll(fake_nll, 2, task, cfg.task, "test", batch_size=3)
  tok = task.tgt_tokenizer
  want = np.array([[sum(sum(tok.encode(r)) + tok.special.eos for r in e.refs),
                    sum(len(tok.encode(r)) + 1 for r in e.refs)] for e in EXAMPLES], float)
  np.testing.assert_array_equal(got, np.stack([want, 2 * want]))
  first_two = evaluate.reference_nll(fake_nll, 2, task, cfg.task, "test", batch_size=3,
                                     max_examples=2)
  np.testing.assert_array_equal(first_two, got[:, :2])


def alone_nll(module, params, task, src: str, ref: str) -> float:
  """-log p(ref + EOS | src), the example alone (no batch, no padding), from log_softmax."""
  special = task.tgt_tokenizer.special
  ex = pipeline.example_arrays(task.src_tokenizer.encode(src), task.tgt_tokenizer.encode(ref),
                               special)
  logits = jax.jit(module.apply)({"params": params}, ex["src"][None], ex["tgt_in"][None])  # [1, T, V]
  logp = jax.nn.log_softmax(np.asarray(logits[0], np.float64))
  return -float(sum(logp[t, y] for t, y in enumerate(ex["tgt_out"])))


def test_each_examples_nll_equals_scoring_it_alone_through_the_model():
  cfg, task = reverse_task()
  task = ManyReferences(task, EXAMPLES)
  module = assembly.build_model(cfg, task)
  src, tgt = assembly.example_inputs(cfg)
  params = jax.jit(module.init)(jax.random.key(1), src, tgt)["params"]
  row_nll = jax.jit(functools.partial(step_lib.row_nll, module))
  got = evaluate.reference_nll(lambda batch: row_nll(params, batch)[None], 1, task, cfg.task,
                               "test", batch_size=4)[0]                # [examples, 2]
  for (nll, tokens), example in zip(got, EXAMPLES):
    want = sum(alone_nll(module, params, task, example.src, r) for r in example.refs)
    assert nll == pytest.approx(want, rel=1e-5)
    assert tokens == sum(len(task.tgt_tokenizer.encode(r)) + 1 for r in example.refs)
  predictions = [evaluate.Prediction(e.src, e.refs, "", float(n), int(t))
                 for e, (n, t) in zip(EXAMPLES, got)]
  scores = evaluate.score(task, predictions)
  nll = got[:, 0].sum() / got[:, 1].sum()
  assert scores["nll"] == pytest.approx(nll) and scores["perplexity"] == pytest.approx(np.exp(nll))


def test_the_tsv_carries_the_nll_and_reads_back_without_it_too(tmp_path):
  rows = [evaluate.Prediction("ab", ("ba", "b a"), "ba", 1.25, 3),
          evaluate.Prediction("c", ("x",), "y\tz", 0.5, 2)]
  evaluate.write_outputs(tmp_path, "test", 7, {}, rows)
  read = predictions_tsv.read(tmp_path / "test-7-predictions.tsv")
  assert read.sources == ["ab", "c"] and read.refs == [["ba", "b a"], ["x"]]
  assert read.predictions == ["ba", "y\tz"]
  np.testing.assert_array_equal(read.reference_nll, [[1.25, 3], [0.5, 2]])
  plain = [dataclasses.replace(p, reference_nll=None, reference_tokens=None) for p in rows[:1]]
  evaluate.write_outputs(tmp_path, "old", 7, {}, plain)
  assert (tmp_path / "old-7-predictions.tsv").read_text().splitlines()[0] == \
      "source\treferences\tprediction"
  old = predictions_tsv.read(tmp_path / "old-7-predictions.tsv")
  assert old.reference_nll is None and old.predictions == ["ba"]
  assert stats.statistic("exact", "nll")[0](old) is None     # report: "cannot be tested"
