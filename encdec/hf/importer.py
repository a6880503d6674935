"""`encdec import-hf SRC_DIR --workdir W`: a Hugging Face checkpoint --> an encdec run directory.

W gets what `encdec train` would have written: config.json (every model field resolved: the
family's preset, then what the checkpoint's config decides; saved with preset "" so that
loading it again, e.g. for fine-tuning, applies no preset over those values; task
`parallel_text` with the checkpoint's own tokenizer) and
an Orbax checkpoint of step 0 holding the parameters (no optimizer state). `encdec eval` and
`encdec decode` read it as they read any run; fine-tuning starts a new run from it with
`train.init_from=W`. The tokenizer files and the HF config are copied into W/hf/, so W does not
depend on SRC_DIR afterwards. Nothing is downloaded.
"""
from __future__ import annotations

import json
import pathlib
import shutil
from typing import Any

import flax.linen
import flax.traverse_util
import jax
import ml_collections
from absl import logging

from encdec import config as config_lib
from encdec.data import tasks
from encdec.errors import ConfigError
from encdec.hf import families, files, tokenizer, weights
from encdec.model import presets, schema
from encdec.train import checkpoint

# Files of a checkpoint directory that W/hf/ keeps: its config and tokenizer.
KEPT_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "spiece.model", "source.spm", "target.spm", "vocab.json")
HF_SUBDIR = "hf"


def run_config(hf_config: dict[str, Any], tensors, tokenizer_dir: pathlib.Path
               ) -> ml_collections.ConfigDict:
  """The encdec config of a checkpoint: config.base() with its model fields and a
  parallel_text task over its tokenizer (no corpus yet; add task.train_path to fine-tune)."""
  family = families.detect(hf_config)
  fields = families.model_fields(family, hf_config, tensors)
  cfg = config_lib.base()
  model = {**presets.fields(fields["preset"]), **fields, "preset": ""}   # resolved, see above
  config_lib.apply_overrides(cfg, {f"model.{k}": v for k, v in model.items()})
  task = tasks.default_config("parallel_text").to_dict()
  longest = min(128, cfg.model.max_len - 2) if cfg.model.position_encoding == "learned" else 128
  task.update(tokenizer=f"hf:{tokenizer_dir.resolve()}", max_src_len=longest, max_tgt_len=longest)
  cfg.task = task
  config_lib.validate(cfg)
  return cfg


def import_checkpoint(src_dir: str | pathlib.Path, workdir: str | pathlib.Path) -> pathlib.Path:
  """Convert checkpoint SRC_DIR into run directory `workdir`; returns the checkpoint path.

  Refuses (one-line ConfigError, nothing written) a workdir that already holds a config."""
  src_dir, workdir = pathlib.Path(src_dir).expanduser(), pathlib.Path(workdir)
  hf_config = files.read_config(src_dir)
  family = families.detect(hf_config)
  if (workdir / "config.json").exists():
    raise ConfigError(f"{workdir / 'config.json'} exists; import into a new --workdir")
  tensors = files.read_tensors(src_dir)
  kept = workdir / HF_SUBDIR
  cfg = run_config(hf_config, tensors, kept)
  model_cfg = schema.from_mapping(cfg.model)
  params = weights.to_params(family, model_cfg, tensors)
  check_shapes(model_cfg, params)
  kept.mkdir(parents=True, exist_ok=True)
  for name in KEPT_FILES:
    if (src_dir / name).is_file():
      shutil.copyfile(src_dir / name, kept / name)
  tokenizer.load(kept)   # a DataError naming the files now, not at the first decode
  (workdir / "config.json").write_text(json.dumps(json.loads(cfg.to_json()), indent=2) + "\n")
  ckpt = checkpoint.Checkpointer(workdir, every_steps=1, keep=cfg.checkpoint.keep,
                                 async_save=False, config=json.loads(cfg.to_json()))
  ckpt.save(0, {"params": jax.tree_util.tree_map(jax.numpy.asarray, params)},
            {"per_process": []}, force=True)
  ckpt.close()
  logging.info("imported %s (%s, %s parameters) into %s", src_dir, family,
               f"{sum(x.size for x in jax.tree_util.tree_leaves(params)):,}", workdir)
  return ckpt.directory / "0"


def check_shapes(cfg: schema.TransformerConfig, params) -> None:
  """Every converted parameter has the shape the model expects (a checkpoint whose tensors
  disagree with its config.json fails here, naming the parameter, not in Orbax's restore)."""
  from encdec import model  # pylint: disable=import-outside-toplevel (flax)
  tokens = jax.numpy.zeros((1, 4), jax.numpy.int32)
  expected = flax.traverse_util.flatten_dict(flax.linen.unbox(jax.eval_shape(
      model.EncoderDecoder(cfg).init, jax.random.key(0), tokens, tokens)["params"]), sep="/")
  got = flax.traverse_util.flatten_dict(params, sep="/")
  for path, value in expected.items():
    if path not in got or got[path].shape != value.shape:
      raise ConfigError(f"the checkpoint's tensors do not fit its config.json: {path} is "
                        f"{got[path].shape if path in got else 'missing'}, expected {value.shape}")
