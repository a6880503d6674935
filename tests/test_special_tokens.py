"""Special token ids are a property of the task's tokenizers: data, masks and the model config
all follow them (here BART's: BOS 0, PAD 1, EOS 2), not encdec's own literals."""
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from encdec import assembly, config
from encdec.data import base, pipeline, tasks
from encdec.data.tokenizers import SpecialTokens
from encdec.errors import ConfigError

BART = SpecialTokens(pad=1, bos=0, eos=2, unk=3)


def bart_task(**overrides):
  cfg = tasks.default_config("reverse")
  cfg.update(num_train=300, **overrides)
  task = tasks.build(cfg)
  for tokenizer in (task.src_tokenizer, task.tgt_tokenizer):
    tokenizer.special = BART
  return cfg, task


def test_unpacked_batches_use_the_tokenizers_ids():
  cfg, task = bart_task()
  batch = next(pipeline.train_batches(task, cfg, batch_size=8, seed=0))
  for src, tin, tout in zip(batch["src"], batch["tgt_in"], batch["tgt_out"]):
    n, m = int(np.argmax(src == BART.eos)), int(np.argmax(tout == BART.eos))
    assert (src[n + 1:] == BART.pad).all() and (src[:n] >= 4).all()
    assert tin[0] == BART.bos and (tin[1:m + 1] == tout[:m]).all()
    assert (tin[m + 1:] == BART.pad).all() and (tout[m + 1:] == BART.pad).all()


def test_packed_batches_pad_with_the_tokenizers_pad_id():
  cfg, task = bart_task()
  batch = next(pipeline.train_batches(task, cfg, batch_size=4, seed=0, pack=True))
  for tokens, segments in (("src", "src_segment_ids"), ("tgt_in", "tgt_segment_ids"),
                           ("tgt_out", "tgt_segment_ids")):
    padding = batch[segments] == 0
    assert padding.any() and (batch[tokens][padding] == BART.pad).all()
    assert (batch[tokens][~padding] != BART.pad).all()


def test_eval_batches_pad_with_the_tokenizers_pad_id():
  cfg, task = bart_task()
  src, examples = next(pipeline.eval_batches(task, cfg, "dev", batch_size=4))
  for row in src:
    n = int(np.argmax(row == BART.eos))
    assert (row[n + 1:] == BART.pad).all()


def test_model_config_takes_the_ids_and_masks_hide_that_pad():
  cfg, task = bart_task()
  run_cfg = config.load("algorithmic:task=reverse")
  model_cfg = assembly.model_config(run_cfg.model, task)
  assert (model_cfg["pad_id"], model_cfg["bos_id"], model_cfg["eos_id"]) == (1, 0, 2)
  module = assembly.build_model(run_cfg, task)
  src = jnp.array([[5, 6, 7, 2]], jnp.int32)                                 # [1, 4]
  padded = jnp.concatenate([src, jnp.full((1, 3), BART.pad, jnp.int32)], 1)  # [1, 7]
  tgt_in = jnp.array([[0, 7, 6, 5]], jnp.int32)
  variables = jax.jit(module.init)(jax.random.key(0), padded, tgt_in)
  forward = jax.jit(module.apply)
  np.testing.assert_allclose(forward(variables, src, tgt_in),
                             forward(variables, padded, tgt_in), atol=1e-5)
  zero_padded = padded.at[:, 4:].set(0)       # 0 is a real token (BOS) here: no longer hidden
  assert not np.allclose(forward(variables, src, tgt_in),
                         forward(variables, zero_padded, tgt_in), atol=1e-5)


def test_tokenizers_that_disagree_are_refused():
  task = types.SimpleNamespace(name="pair", src_tokenizer=types.SimpleNamespace(special=BART),
                               tgt_tokenizer=types.SimpleNamespace(special=SpecialTokens()))
  with pytest.raises(ConfigError, match="tokenizers must agree"):
    base.special_tokens(task)
