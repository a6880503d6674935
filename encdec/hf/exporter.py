"""`encdec export-hf W OUT_DIR`: an encdec run whose model an HF class expresses --> a
checkpoint directory that transformers loads (config.json, model.safetensors, tokenizer).

The architecture comes from the run's Hugging Face origin: the config.json that
`encdec import-hf` kept in its hf/ directory, found through the run's `task.tokenizer=hf:DIR`
(so a run fine-tuned with `train.init_from` exports too). The weights are the run's (newest
checkpoint, or --step). A model that the HF class cannot express (another cross-attention
variant or placement, a changed field) is refused in one line: re-importing the export must
give back the run's model fields, which is checked before anything is written.
"""
from __future__ import annotations

import pathlib
import shutil

import jax
import numpy as np

from encdec import run as run_lib
from encdec.errors import ConfigError
from encdec.hf import families, files, importer, weights
from encdec.model import cross_attention, schema


def origin_dir(task_cfg) -> pathlib.Path:
  """The hf/ directory of the import a run descends from (task.tokenizer="hf:DIR")."""
  spec = task_cfg.get("tokenizer", "") if hasattr(task_cfg, "get") else ""
  if not spec.startswith("hf:"):
    raise ConfigError("this run was not imported from a Hugging Face checkpoint (its "
                      "task.tokenizer is not hf:DIR), so no HF class is known to express it")
  return pathlib.Path(spec[3:]).expanduser()


def check_expressible(cfg: schema.TransformerConfig, hf_config, tensors, family: str) -> None:
  """A ConfigError naming the first model field that re-importing the export would not give."""
  standard = cfg.variant is cross_attention.MultiHeadCrossAttention
  if not standard or cfg.cross_layers() != (True,) * cfg.num_decoder_layers:
    raise ConfigError(f"model.cross_attention={cfg.cross_attention!r} in layers "
                      f"{cfg.cross_attention_layers!r}: {family}'s HF class has standard "
                      "cross-attention in every decoder layer; export needs mha in all")
  again = schema.from_mapping({**families.model_fields(family, hf_config, tensors),
                               "scan_layers": cfg.scan_layers, "dtype": cfg.dtype,
                               "remat": cfg.remat, "dropout_rate": cfg.dropout_rate,
                               "attention_dropout_rate": cfg.attention_dropout_rate,
                               **families.special_tokens(family, hf_config).model_fields()})
  for field in ("d_model", "num_heads", "heads_dim", "d_ff", "num_encoder_layers",
                "num_decoder_layers", "src_vocab_size", "tgt_vocab_size", "share_embeddings",
                "tie_output", "tied_logits_scale", "position_encoding", "max_len",
                "relative_buckets", "relative_max_distance", "norm", "norm_type",
                "norm_epsilon", "mlp", "activation", "attention_bias", "mlp_bias",
                "scale_embeddings", "embedding_norm", "logits_bias", "pad_id", "bos_id",
                "eos_id"):
    if getattr(again, field) != getattr(cfg, field):
      raise ConfigError(f"model.{field}={getattr(cfg, field)!r} cannot be expressed by "
                        f"{family}'s HF config (it would load as {getattr(again, field)!r})")


def export_run(workdir: str | pathlib.Path, out_dir: str | pathlib.Path,
               step: int | None = None) -> pathlib.Path:
  """Write run `workdir` (checkpoint `step`, default the newest) as an HF checkpoint."""
  out_dir = pathlib.Path(out_dir)
  if (out_dir / files.CONFIG).exists():
    raise ConfigError(f"{out_dir / files.CONFIG} exists; export into a new directory")
  run = run_lib.load(workdir, step)
  origin = origin_dir(run.cfg.task)
  hf_config = files.read_config(origin)
  family = families.detect(hf_config)
  cfg = run.module.config
  params = jax.tree_util.tree_map(np.asarray, jax.device_get(run.params))
  tensors = weights.from_params(family, cfg, params)
  check_expressible(cfg, hf_config, tensors, family)
  files.write_checkpoint(out_dir, hf_config, tensors)
  for name in importer.KEPT_FILES:
    if name != files.CONFIG and (origin / name).is_file():
      shutil.copyfile(origin / name, out_dir / name)
  return out_dir
