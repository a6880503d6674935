"""Configs: Python files with `get_config(arg) -> ConfigDict`, loaded, overridden, validated.

    cfg = config.load("configs/g2p_cmudict.py:size=base", overrides={"model.d_model": 64})

Every config starts from `base()`, which lists every key the code reads with its default, so a
mistyped key or a value of the wrong type fails at load time with a one-line ConfigError.
"""
from __future__ import annotations

import ast
import difflib
import importlib.util
import pathlib
from typing import Any, Iterable, Mapping

import ml_collections

from encdec.errors import ConfigError  # re-exported: pylint: disable=unused-import

SECTIONS = ("model", "task", "train", "optim", "checkpoint", "mesh", "eval", "decode", "logging")
DEFAULT_CONFIG = pathlib.Path(__file__).resolve().parent.parent / "configs" / "g2p_cmudict.py"


def base() -> ml_collections.ConfigDict:
  """Every section and key the code reads, with defaults. Config files override these."""
  c = ml_collections.ConfigDict()
  c.model = dict(
      src_vocab_size=0, tgt_vocab_size=0,  # 0: taken from the task's tokenizers
      d_model=256, num_heads=4, head_dim=0, d_ff=1024, num_encoder_layers=3,
      num_decoder_layers=3, dropout_rate=0.1, attention_dropout_rate=0.0, cross_attention="mha",
      cross_kv_heads=0, cross_latents=16, cross_window=4, cross_attention_layers="all",
      share_embeddings=False, tie_output=True, position_encoding="sinusoidal", max_len=512,
      norm="pre", activation="relu", dtype="float32", scan_layers=True, remat="none")
  c.task = dict(name="copy")
  c.train = dict(num_steps=1000, batch_size=64, seed=0, accum_steps=1, label_smoothing=0.1,
                 pack=False, skip_nonfinite=False,
                 init_from="", init_from_step=0, init_mapping=())  # warm start: train/warm_start.py
  c.optim = dict(learning_rate=1e-3, schedule="rsqrt", warmup_steps=500, b1=0.9, b2=0.98,
                 eps=1e-9, weight_decay=0.0, grad_clip_norm=1.0,
                 trainable="")   # a regex over parameter paths: train only those (optim.py)
  c.checkpoint = dict(every_steps=1000, keep=3, async_save=True)
  c.mesh = dict(data=-1, fsdp=1, tensor=1)
  c.eval = dict(every_steps=1000, split="dev", max_examples=500, final_split="test",
                extra_final_splits="",   # comma-separated, also decoded at the end (test_long)
                batch_size=256, num_samples_to_print=8)
  c.decode = dict(max_len=0, beam_size=1, alpha=0.6)   # max_len 0: task.max_tgt_len + 1
  c.logging = dict(every_steps=100, tensorboard=True)
  return c


def with_defaults(section: str, saved: Mapping[str, Any]) -> dict[str, Any]:
  """A section of a saved config.json, with keys added to `base()` since then at their defaults.

  A run saved before a new model option existed then resumes as long as the option is unset.
  """
  return {**base()[section].to_dict(), **saved}


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """big_vision-style config argument: "size=small,seeds=3" --> ConfigDict with typed values."""
  out = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, sep, value = item.partition("=")
    if not sep or key not in defaults:
      raise ConfigError(f"bad config argument {item!r}; expected KEY=VALUE with KEY in "
                        f"{sorted(defaults)}")
    out[key] = type(defaults[key])(_literal(value)) if defaults[key] is not None else value
  return out


def load(spec: str | None = None, overrides: Mapping[str, Any] | None = None,
         ) -> ml_collections.ConfigDict:
  """Load `PATH[:ARG]` (default: the embedded G2P config), apply overrides, validate, lock."""
  path, _, arg = (spec or str(DEFAULT_CONFIG)).partition(":")
  cfg = _call_get_config(pathlib.Path(path), arg or None)
  apply_overrides(cfg, overrides or {})
  validate(cfg)
  cfg.lock()
  return cfg


def _call_get_config(path: pathlib.Path, arg: str | None) -> ml_collections.ConfigDict:
  if not path.is_file():
    raise ConfigError(f"config file {path} does not exist; pass --config PATH[:ARG] "
                      f"(e.g. {DEFAULT_CONFIG.relative_to(DEFAULT_CONFIG.parents[1])})")
  spec = importlib.util.spec_from_file_location(f"encdec_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"config file {path} defines no get_config(arg=None)")
  return module.get_config(arg)


def parse_overrides(args: Iterable[str], prefix: str = "--config.") -> dict[str, Any]:
  """["--config.model.d_model=64", ...] --> {"model.d_model": 64} (values as Python literals)."""
  out = {}
  for a in args:
    if not a.startswith(prefix) or "=" not in a:
      raise ConfigError(f"unrecognised argument {a!r}; overrides look like {prefix}KEY=VALUE")
    key, value = a[len(prefix):].split("=", 1)
    out[key] = _literal(value)
  return out


def _literal(text: str) -> Any:
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text  # a bare string, e.g. --config.model.cross_attention=mqa


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: Mapping[str, Any]) -> None:
  """Set dotted keys in place; an unknown key or a value of the wrong type is a ConfigError."""
  for dotted, value in overrides.items():
    *parents, leaf = dotted.split(".")
    node = cfg
    for i, name in enumerate(parents):
      node = _child(node, name, ".".join(parents[:i]))
    if leaf not in node:
      raise ConfigError(_unknown_key_message(dotted, leaf, node))
    node[leaf] = _coerce(dotted, node[leaf], value)


def _child(node, name: str, where: str):
  if not isinstance(node, ml_collections.ConfigDict) or name not in node:
    raise ConfigError(_unknown_key_message(f"{where}.{name}".strip("."), name, node))
  return node[name]


def _unknown_key_message(dotted: str, leaf: str, node) -> str:
  keys = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
  close = difflib.get_close_matches(leaf, keys, n=1)
  hint = f"; did you mean {close[0]!r}?" if close else f"; valid here: {', '.join(sorted(keys))}"
  return f"unknown config key {dotted!r}{hint}"


def _coerce(dotted: str, current: Any, value: Any) -> Any:
  """`value` converted to the type of the key's current value, or a ConfigError."""
  if current is None or isinstance(current, ml_collections.ConfigDict):
    return value
  want = type(current)
  if want is float and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if want in (tuple, list) and isinstance(value, (tuple, list)):
    return want(value)
  if isinstance(value, want) and not (want is int and isinstance(value, bool)):
    return value
  raise ConfigError(f"config key {dotted!r} expects {want.__name__}, got {value!r} "
                    f"({type(value).__name__})")


def validate(cfg: ml_collections.ConfigDict) -> None:
  """Checks that need no model or data: sections present, sizes positive, choices known."""
  missing = [s for s in SECTIONS if s not in cfg]
  if missing:
    raise ConfigError(f"config lacks section(s) {missing}; start from encdec.config.base()")
  positive = {"train.num_steps": cfg.train.num_steps, "train.batch_size": cfg.train.batch_size,
              "train.accum_steps": cfg.train.accum_steps, "model.d_model": cfg.model.d_model,
              "model.num_heads": cfg.model.num_heads, "model.d_ff": cfg.model.d_ff,
              "checkpoint.every_steps": cfg.checkpoint.every_steps,
              "logging.every_steps": cfg.logging.every_steps,
              "eval.batch_size": cfg.eval.batch_size}
  for key, value in positive.items():
    if value <= 0:
      raise ConfigError(f"config key {key!r} must be positive, got {value}")
  if cfg.train.batch_size % cfg.train.accum_steps:
    raise ConfigError(f"train.batch_size={cfg.train.batch_size} is not divisible by "
                      f"train.accum_steps={cfg.train.accum_steps}")
  for key in ("dropout_rate", "attention_dropout_rate"):
    if not 0.0 <= cfg.model[key] < 1.0:
      raise ConfigError(f"config key 'model.{key}' must be in [0, 1), got {cfg.model[key]}")
  if not 0.0 <= cfg.train.label_smoothing < 1.0:
    raise ConfigError(f"train.label_smoothing must be in [0, 1), got {cfg.train.label_smoothing}")
  _check_registered(cfg)


def _check_registered(cfg: ml_collections.ConfigDict) -> None:
  """Names looked up in registries (variant, schedule) fail here, before any compiling."""
  from encdec.model import cross_attention   # pylint: disable=import-outside-toplevel
  from encdec.data import tasks              # pylint: disable=import-outside-toplevel
  from encdec.train import optim             # pylint: disable=import-outside-toplevel
  if cfg.task.get("name") not in tasks.TASKS:
    raise ConfigError(f"unknown task.name {cfg.task.get('name')!r}; valid: "
                      f"{', '.join(sorted(tasks.TASKS))}")
  if cfg.model.cross_attention not in cross_attention.CROSS_ATTENTION:
    raise ConfigError(f"unknown model.cross_attention {cfg.model.cross_attention!r}; valid: "
                      f"{', '.join(sorted(cross_attention.CROSS_ATTENTION))}")
  if cfg.train.pack and not cross_attention.get(cfg.model.cross_attention).supports_packing:
    raise ConfigError(f"model.cross_attention={cfg.model.cross_attention!r} cannot read packed "
                      "batches (it would mix the packed examples); set train.pack=False")
  if cfg.optim.schedule not in optim.SCHEDULES:
    raise ConfigError(f"unknown optim.schedule {cfg.optim.schedule!r}; valid: "
                      f"{', '.join(sorted(optim.SCHEDULES))}")
