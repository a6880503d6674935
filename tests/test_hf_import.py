"""Hugging Face checkpoints in encdec, checked against transformers' outputs without torch.

The fixtures (tests/fixtures/hf/<name>/, made by make_fixtures.py with transformers) are small
random T5 v1.0 (tied, scaled head), T5 v1.1 (gated GELU, unscaled head), BART and Marian
models, tied and untied, 2 + 2 layers, each with transformers' teacher-forced logits and
greedy / beam-4 outputs. tests/test_hf_live.py compares with transformers itself when it is
installed.
"""
import json
import pathlib
import shutil

import jax
import numpy as np
import pytest

from encdec import cli, decoding, model, run as run_lib
from encdec.errors import CheckpointError, ConfigError, DataError
from encdec.hf import exporter, families, files, importer, tokenizer, weights
from hf_fixtures import FIXTURES, MAX_NEW_TOKENS, NAMES, converted, finished_rows

# The untied fixtures' logits in the slow suite (the quick one keeps one model per family and
# T5 version; their tensor names are checked quickly by test_export_writes_back_the_same_tensors).
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if "untied" in n else n
                                  for n in NAMES])
def test_teacher_forced_logits_equal_transformers(name):
  module, variables, e = converted(name)
  logits = jax.jit(module.apply)(variables, e["src"], e["tgt_in"])
  np.testing.assert_allclose(np.asarray(logits), e["logits"], atol=1e-4, rtol=0)


def test_a_wrong_conversion_fails_the_logits_check():
  """The check can fail: T5's unscaled attention logits left unfolded (queries not multiplied
  by sqrt(head_dim)) give other logits."""
  module, variables, e = converted("t5_v1_1")
  qkv = variables["params"]["encoder"]["layers"]["self_attention"]["qkv"]["kernel"]
  qkv[:, :, 0] /= np.sqrt(module.config.heads_dim)
  logits = jax.jit(module.apply)(variables, e["src"], e["tgt_in"])
  assert np.abs(np.asarray(logits) - e["logits"]).max() > 1e-2


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_greedy_and_beam_equal_transformers_generate(name):
  """Greedy equals generate(num_beams=1); beam 4 (alpha 0) equals generate(num_beams=4,
  length_penalty=0) on every row whose transformers hypothesis ends with EOS. At the length
  limit transformers returns its best hypothesis even when unfinished, encdec its best
  finished one: the searches differ there (README, Pretrained models)."""
  module, variables, e = converted(name)
  eos = module.config.eos_id
  greedy = decoding.greedy(module, variables, e["src"], MAX_NEW_TOKENS)
  np.testing.assert_array_equal(np.asarray(greedy), e["greedy"])
  beam = np.asarray(decoding.beam_search(module, variables, e["src"], 4, MAX_NEW_TOKENS,
                                         alpha=0.0))
  finished = finished_rows(e["beam"], eos)
  assert finished, "the fixture has no finished beam row to compare"
  np.testing.assert_array_equal(beam[finished], e["beam"][finished])


def test_import_writes_a_run_that_eval_and_decode_load(tmp_path):
  """`encdec import-hf` writes config.json + an Orbax checkpoint that run.load (eval, decode,
  train.init_from) reads: same logits, the checkpoint's special ids, its tokenizer copied."""
  workdir = tmp_path / "run"
  assert cli.main(["import-hf", str(FIXTURES / "marian"), "--workdir", str(workdir)]) == 0
  assert sorted(p.name for p in (workdir / "hf").iterdir()) == [
      "config.json", "generation_config.json", "tokenizer.json"]
  run = run_lib.load(workdir)
  cfg = run.module.config
  assert (cfg.pad_id, cfg.bos_id, cfg.eos_id) == (63, 63, 0)   # Marian: PAD starts decoding
  assert (cfg.preset, cfg.position_encoding, cfg.tied_logits_scale) == ("", "learned", False)
  e = np.load(FIXTURES / "marian" / "expected.npz")
  logits = jax.jit(run.module.apply)({"params": run.params}, e["src"].astype(np.int32),
                                     e["tgt_in"].astype(np.int32))
  np.testing.assert_allclose(np.asarray(logits), e["logits"], atol=1e-4, rtol=0)
  assert json.loads((workdir / "config.json").read_text())["task"]["tokenizer"] == \
      f"hf:{(workdir / 'hf').resolve()}"


def test_import_refuses_an_existing_run(tmp_path):
  (tmp_path / "config.json").write_text("{}")
  with pytest.raises(ConfigError, match="exists; import into a new --workdir"):
    importer.import_checkpoint(FIXTURES / "bart", tmp_path)


def copy_fixture(name: str, tmp_path: pathlib.Path) -> pathlib.Path:
  return pathlib.Path(shutil.copytree(FIXTURES / name, tmp_path / name))


def test_unsupported_architecture_is_one_line(tmp_path, capsys):
  src = copy_fixture("bart", tmp_path)
  config = json.loads((src / "config.json").read_text())
  config["architectures"] = ["MBartForConditionalGeneration"]
  (src / "config.json").write_text(json.dumps(config))
  assert cli.main(["import-hf", str(src), "--workdir", str(tmp_path / "w")]) == 2
  err = capsys.readouterr().err.strip()
  assert "\n" not in err and "unsupported architecture 'MBartForConditionalGeneration'" in err
  assert not (tmp_path / "w").exists()


def test_missing_tensor_is_named(tmp_path):
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  src = copy_fixture("t5_v1_1", tmp_path)
  tensors = files.read_tensors(src)
  del tensors["decoder.block.1.layer.1.EncDecAttention.k.weight"]
  save_file(tensors, str(src / "model.safetensors"))
  with pytest.raises(CheckpointError, match="lacks tensor 'decoder.block.1.layer.1.EncDecAttention"
                                            ".k.weight' \\(needed for decoder/layer_1/cross"):
    importer.import_checkpoint(src, tmp_path / "w")


def test_torch_pickle_is_refused_with_the_conversion_command(tmp_path):
  src = copy_fixture("bart", tmp_path)
  (src / "model.safetensors").rename(src / "pytorch_model.bin")
  with pytest.raises(CheckpointError, match="torch pickle.*save_pretrained"):
    files.read_tensors(src)


def test_a_checkpoint_without_a_tokenizer_is_refused(tmp_path):
  src = copy_fixture("bart", tmp_path)
  (src / "tokenizer.json").unlink()
  with pytest.raises(DataError, match="no tokenizer in"):
    importer.import_checkpoint(src, tmp_path / "w")
  assert not (tmp_path / "w" / "config.json").exists()


@pytest.mark.parametrize("name", NAMES)
def test_export_writes_back_the_same_tensors(name):
  """to_params then from_params gives every tensor transformers reads, unchanged (T5's query
  scaling and BART's position offset undone; Marian's computed sinusoids not written)."""
  directory = FIXTURES / name
  hf_config, tensors = files.read_config(directory), files.read_tensors(directory)
  family = families.detect(hf_config)
  cfg = model.schema.from_mapping(families.model_fields(family, hf_config, tensors))
  back = weights.from_params(family, cfg, weights.to_params(family, cfg, tensors))
  for key, value in back.items():
    original = tensors[key]
    if key.endswith("embed_positions.weight"):   # BART: rows 0-1 are never read
      original, value = original[2:], value[2:]
    np.testing.assert_allclose(value, original, atol=1e-6, rtol=1e-6, err_msg=key)
  unused = {k for k in tensors if k not in back}   # tied copies; 'shared' where stacks own theirs
  assert all(k.endswith(("embed_tokens.weight", "lm_head.weight", "shared.weight"))
             for k in unused), unused


def test_export_hf_round_trip_and_refusals(tmp_path):
  """`encdec export-hf` of an imported run re-imports to the same model; a run with another
  cross-attention variant is refused in one line, before anything is written."""
  workdir, out = tmp_path / "run", tmp_path / "out"
  importer.import_checkpoint(FIXTURES / "t5_v1_1", workdir)
  assert cli.main(["export-hf", str(workdir), str(out)]) == 0
  assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
  again = files.read_tensors(out)
  original = files.read_tensors(FIXTURES / "t5_v1_1")
  assert set(again) == set(original)
  for key in original:
    np.testing.assert_allclose(again[key], original[key], atol=1e-6, rtol=1e-6, err_msg=key)
  run = run_lib.load(workdir)
  cfg = run.module.config
  hf_config = files.read_config(out)
  tensors = weights.from_params("t5", cfg, jax.device_get(run.params))
  gqa = model.schema.from_mapping({**cfg.__dict__, "cross_attention": "gqa"})
  with pytest.raises(ConfigError, match="cross_attention='gqa'"):
    exporter.check_expressible(gqa, hf_config, tensors, "t5")
  wider = model.schema.from_mapping({**cfg.__dict__, "norm_epsilon": 1e-5})
  with pytest.raises(ConfigError, match="model.norm_epsilon=1e-05 cannot be expressed"):
    exporter.check_expressible(wider, hf_config, tensors, "t5")


def test_tokenizer_json_with_the_checkpoint_special_ids(tmp_path):
  src_tok, tgt_tok = tokenizer.load(FIXTURES / "bart")
  assert src_tok is tgt_tok and src_tok.vocab_size == 64
  assert (src_tok.special.pad, src_tok.special.bos, src_tok.special.eos, src_tok.special.unk) == (
      1, 2, 2, 3)   # BART: decoding starts from EOS
  assert src_tok.encode("w5 w9 nope") == [5, 9, 3]
  assert src_tok.decode([5, 0, 9, 1, 2, 7]) == "w5 <s> w9"   # stops at EOS, drops PAD


def test_sentencepiece_tokenizers_t5_and_marian(tmp_path):
  """spiece.model (T5) and source.spm / target.spm + vocab.json (Marian: ids from vocab.json)."""
  import sentencepiece as spm  # pylint: disable=import-outside-toplevel
  text = ["the cat sat on the mat", "a dog ran far away", "cats and dogs"] * 20
  spm.SentencePieceTrainer.train(sentence_iterator=iter(text), model_prefix=str(tmp_path / "sp"),
                                 vocab_size=20, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                 minloglevel=2)
  t5 = copy_fixture("t5_v1_1", tmp_path)
  (t5 / "tokenizer.json").unlink()
  shutil.copy(tmp_path / "sp.model", t5 / "spiece.model")
  tok, _ = tokenizer.load(t5)
  ids = tok.encode("the cat sat")
  assert tok.decode(ids + [1, 5]) == "the cat sat" and tok.special.eos == 1
  marian = copy_fixture("marian", tmp_path)
  (marian / "tokenizer.json").unlink()
  for side in ("source", "target"):
    shutil.copy(tmp_path / "sp.model", marian / f"{side}.spm")
  sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "sp.model"))
  pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
  vocab = {p: 62 - i for i, p in enumerate(pieces)}          # other ids than the spm's
  (marian / "vocab.json").write_text(json.dumps(vocab))
  src_tok, tgt_tok = tokenizer.load(marian)
  ids = src_tok.encode("the cat")
  assert ids == [vocab[p] for p in sp.encode("the cat", out_type=str)]
  assert tgt_tok.decode(ids + [0]) == "the cat"


def test_parallel_text_reads_the_checkpoint_tokenizer(tmp_path):
  from encdec.data import base, tasks  # pylint: disable=import-outside-toplevel
  corpus = tmp_path / "train.tsv"
  corpus.write_text("w5 w6\tw7 w8 w9\nw10\tw11\n")
  cfg = tasks.default_config("parallel_text")
  cfg.update(train_path=str(corpus), tokenizer=f"hf:{FIXTURES / 'marian'}")
  task = tasks.build(cfg)
  assert base.special_tokens(task).model_fields() == {"pad_id": 63, "bos_id": 63, "eos_id": 0}
  assert task.tgt_tokenizer.encode(task.pairs("train")[0][1]) == [7, 8, 9]
  cfg.update(train_path="", tokenizer="spm")
  with pytest.raises(ConfigError, match="task.tokenizer='spm'"):
    tasks.build(cfg)


def test_gqa_uptraining_from_an_imported_mha_model():
  """model.cross_attention=gqa warm-started from an imported MHA model (train.init_from's
  merge): K/V heads mean-pooled per group (Ainslie et al. 2023); with cross_kv_heads =
  num_heads the logits are the original ones exactly."""
  from encdec.train import warm_start  # pylint: disable=import-outside-toplevel
  mha, variables, e = converted("bart")
  heads = mha.config.num_heads
  for kv_heads in (heads, 2):
    gqa, _, _ = converted("bart", cross_attention="gqa", cross_kv_heads=kv_heads)
    fresh = jax.eval_shape(gqa.init, jax.random.key(0), e["src"], e["tgt_in"])["params"]
    fresh = jax.tree_util.tree_map(lambda x: np.zeros(x.shape, x.dtype), nn_unbox(fresh))
    params, _, new = warm_start.merge(fresh, variables["params"])
    assert not new
    old_kv = variables["params"]["decoder"]["layers"]["cross_attention"]["kv"]["kernel"]
    kv = params["decoder"]["layers"]["cross_attention"]["kv"]["kernel"]   # [L, d, 2, Hk, D]
    np.testing.assert_allclose(kv[..., 0, :], old_kv[..., :heads // kv_heads, :].mean(-2))
    if kv_heads == heads:
      logits = jax.jit(gqa.apply)({"params": params}, e["src"], e["tgt_in"])
      original = jax.jit(mha.apply)(variables, e["src"], e["tgt_in"])
      np.testing.assert_array_equal(np.asarray(logits), np.asarray(original))


def test_cross_attention_in_some_layers_of_an_imported_model():
  """model.cross_attention_layers=last on an imported model: the decoder unrolls, the other
  layers' cross-attention is dropped, everything else is copied."""
  from encdec.train import warm_start  # pylint: disable=import-outside-toplevel
  _, variables, e = converted("bart")
  last, _, _ = converted("bart", cross_attention_layers="last")
  fresh = nn_unbox(jax.eval_shape(last.init, jax.random.key(0), e["src"], e["tgt_in"])["params"])
  params, copied, new = warm_start.merge(fresh, variables["params"])
  assert not new and "cross_attention" not in params["decoder"]["layer_0"]
  np.testing.assert_array_equal(
      params["decoder"]["layer_1"]["cross_attention"]["query"]["kernel"],
      variables["params"]["decoder"]["layers"]["cross_attention"]["query"]["kernel"][1])
  assert "encoder/layers/mlp/wi/kernel" in copied


def nn_unbox(tree):
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  return nn.unbox(tree)


def test_tensors_that_disagree_with_the_config_are_named(tmp_path):
  src = copy_fixture("bart", tmp_path)
  config = json.loads((src / "config.json").read_text())
  config["encoder_ffn_dim"] = config["decoder_ffn_dim"] = 48
  (src / "config.json").write_text(json.dumps(config))
  with pytest.raises(ConfigError, match="do not fit its config.json: .*fc.\\.(weight|bias)"):
    importer.import_checkpoint(src, tmp_path / "w")
