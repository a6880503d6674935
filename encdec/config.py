"""Configs: Python files with `get_config(arg) -> ConfigDict`, loaded, overridden, validated.

    cfg = config.load("g2p_cmudict:size=base", overrides={"model.d_model": 64})
    cfg = config.load("path/to/my_config.py:size=small")

Every config starts from `base()`, which lists every key the code reads with its default, so a
mistyped key or a value of the wrong type fails at load time with a one-line ConfigError.
"""
from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import pathlib
from typing import Any, Iterable, Mapping

import ml_collections

from encdec.errors import ConfigError
from encdec.model import presets, schema

SECTIONS = ("model", "task", "train", "optim", "checkpoint", "mesh", "eval", "decode", "logging")
# Per-run hyperparameters: they change no array shape, so `encdec train-batch` takes them per
# member (encdec/train/step.py: HPARAMS; encdec/train/batched.py).
HPARAM_KEYS = ("optim.learning_rate", "optim.warmup_steps", "optim.weight_decay",
               "optim.grad_clip_norm", "train.label_smoothing", "model.dropout_rate",
               "model.attention_dropout_rate")
SEED_KEY = "train.seed"
# What the members of a batched run (encdec train-batch, encdec sweep --batch) may differ in.
PER_MEMBER_KEYS = (SEED_KEY, *HPARAM_KEYS)
PACKAGED_CONFIGS = pathlib.Path(__file__).resolve().parent / "configs"   # shipped with encdec
DEFAULT_CONFIG = PACKAGED_CONFIGS / "g2p_cmudict.py"


def base() -> ml_collections.ConfigDict:
  """Every section and key the code reads, with defaults. Config files override these."""
  c = ml_collections.ConfigDict()
  c.model = schema.fields()   # TransformerConfig's fields and defaults (encdec/model/schema.py)
  c.task = dict(name="copy")
  c.train = dict(num_steps=1000, batch_size=64, seed=0, accum_steps=1, label_smoothing=0.1,
                 pack=False, skip_nonfinite=False,
                 bucket_width=0,    # > 0: length-bucketed batches padded to multiples of it
                 bucket_window=64,  # global batches sorted by length together (pipeline.py)
                 cpu_unrolled_threefry=True,   # lower dropout's hash unrolled on CPU (threefry.py)
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


def read_saved(path: str | pathlib.Path) -> dict[str, Any]:
  """A run's saved config.json as a dict; a ConfigError naming the file if it is unreadable."""
  path = pathlib.Path(path)
  try:
    saved = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ConfigError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}); restore it or "
                      "use another --workdir") from e
  if not isinstance(saved, dict):
    raise ConfigError(f"{path} holds no config (a JSON object was expected)")
  return saved


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


def choose(table: Mapping[str, Any], value: str, name: str) -> Any:
  """table[value] for a config argument, or a one-line ConfigError listing the valid values:
  `SIZES = {...}; choose(SIZES, arg.size, "size")`."""
  if value not in table:
    raise ConfigError(f"unknown config argument {name}={value!r}; valid: {', '.join(table)}")
  return table[value]


def resolve_path(path: str | pathlib.Path) -> pathlib.Path:
  """A config file: PATH if it exists, else the packaged config of that name (`g2p_cmudict`,
  `g2p_cmudict.py` or `configs/g2p_cmudict.py`, as a checkout once named them)."""
  path = pathlib.Path(path)
  if path.is_file():
    return path
  packaged = PACKAGED_CONFIGS / f"{path.stem}.py"
  if packaged.is_file() and path.parent.name in ("", "configs") and path.suffix in ("", ".py"):
    return packaged
  names = ", ".join(sorted(p.stem for p in PACKAGED_CONFIGS.glob("[!_]*.py")))
  raise ConfigError(f"config file {path} does not exist; pass --config PATH[:ARG] or the name "
                    f"of a packaged config ({names})")


def load_module(spec: str):
  """The Python module of config `PATH[:ARG]` (or a packaged config's NAME[:ARG])."""
  path = resolve_path(spec.partition(":")[0])
  module_spec = importlib.util.spec_from_file_location(f"encdec_config_{path.stem}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module


def load(spec: str | None = None, overrides: Mapping[str, Any] | None = None,
         ) -> ml_collections.ConfigDict:
  """Load `PATH[:ARG]` or `NAME[:ARG]` (default: the embedded G2P config), apply the model
  preset (`model.preset`, encdec/model/presets.py), then the overrides, validate, lock."""
  spec = spec or str(DEFAULT_CONFIG)
  module = load_module(spec)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"config file {spec.partition(':')[0]} defines no get_config(arg=None)")
  cfg = module.get_config(spec.partition(":")[2] or None)
  apply_preset(cfg, overrides or {})
  apply_overrides(cfg, overrides or {})
  validate(cfg)
  cfg.lock()
  return cfg


def apply_preset(cfg: ml_collections.ConfigDict, overrides: Mapping[str, Any]) -> None:
  """Set the model fields of `model.preset` (the override's, else the config file's) in place:
  over the config file's values, under the overrides, which are applied after it."""
  preset = overrides.get("model.preset", cfg.model.get("preset", ""))
  if isinstance(preset, str):   # another type: apply_overrides names the key and the type
    cfg.model.update(presets.fields(preset))


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


# Ranges of the numeric keys outside `model` (whose ranges live in its schema): (key, low,
# high, whether each bound is allowed); None: unbounded.
RANGES = [
    ("train.num_steps", 1, None), ("train.batch_size", 1, None), ("train.accum_steps", 1, None),
    ("train.label_smoothing", 0.0, "<1"), ("train.init_from_step", 0, None),
    ("optim.learning_rate", ">0", None), ("optim.warmup_steps", 0, None),
    ("optim.b1", 0.0, "<1"), ("optim.b2", 0.0, "<1"), ("optim.eps", ">0", None),
    ("optim.weight_decay", 0.0, None), ("optim.grad_clip_norm", 0.0, None),
    ("checkpoint.every_steps", 1, None), ("checkpoint.keep", 1, None),
    ("eval.every_steps", 1, None), ("eval.max_examples", 0, None), ("eval.batch_size", 1, None),
    ("eval.num_samples_to_print", 0, None), ("decode.max_len", 0, None),
    ("decode.beam_size", 1, None), ("decode.alpha", 0.0, None), ("logging.every_steps", 1, None),
]


def _check_range(key: str, value, low, high) -> None:
  """low/high: a number (inclusive), ">x"/"<x" (exclusive) or None (unbounded)."""
  def bound(spec, sign):
    if spec is None:
      return True, ""
    strict = isinstance(spec, str)
    limit = float(spec[1:]) if strict else spec
    ok = (value > limit if strict else value >= limit) if sign > 0 else (
        value < limit if strict else value <= limit)
    return ok, f"{'>' if sign > 0 else '<'}{'' if strict else '='} {limit:g}"
  (low_ok, low_text), (high_ok, high_text) = bound(low, 1), bound(high, -1)
  if not (low_ok and high_ok):
    want = " and ".join(t for t in (low_text, high_text) if t)
    raise ConfigError(f"config key {key!r} must be {want}, got {value}")


def validate(cfg: ml_collections.ConfigDict) -> None:
  """Checks that need no model or data: sections present, every number in its range, names
  known. Imports neither Flax nor TFDS."""
  missing = [s for s in SECTIONS if s not in cfg]
  if missing:
    raise ConfigError(f"config lacks section(s) {missing}; start from encdec.config.base()")
  for key, low, high in RANGES:
    section, name = key.split(".")
    _check_range(key, cfg[section][name], low, high)
  for axis in ("data", "fsdp", "tensor"):
    if cfg.mesh[axis] < 1 and cfg.mesh[axis] != -1:
      raise ConfigError(f"config key 'mesh.{axis}' must be a positive device count or -1 (the "
                        f"remaining devices), got {cfg.mesh[axis]}")
  if cfg.train.batch_size % cfg.train.accum_steps:
    raise ConfigError(f"train.batch_size={cfg.train.batch_size} is not divisible by "
                      f"train.accum_steps={cfg.train.accum_steps}")
  schema.TransformerConfig(**cfg.model.to_dict())    # ranges, choices, consistency
  _check_registered(cfg)


def _check_registered(cfg: ml_collections.ConfigDict) -> None:
  """Names looked up in registries (task, schedule) fail here, before any compiling."""
  from encdec.data import tasks              # pylint: disable=import-outside-toplevel
  from encdec.train import optim             # pylint: disable=import-outside-toplevel
  tasks.TASKS.check(cfg.task.get("name"))
  if cfg.train.pack and not schema.CROSS_ATTENTION[cfg.model.cross_attention].supports_packing:
    raise ConfigError(f"model.cross_attention={cfg.model.cross_attention!r} cannot read packed "
                      "batches (it would mix the packed examples); set train.pack=False")
  if cfg.optim.schedule not in optim.SCHEDULES:
    raise ConfigError(f"unknown optim.schedule {cfg.optim.schedule!r}; valid: "
                      f"{', '.join(sorted(optim.SCHEDULES))}")


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def differing_keys(configs: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
  """Name -> the flattened (dotted) config keys whose values differ between the configs."""
  flat = {name: _flatten(c) for name, c in configs.items()}
  keys = list(dict.fromkeys(k for f in flat.values() for k in f))
  varying = [k for k in keys
             if len({json.dumps(f.get(k), sort_keys=True) for f in flat.values()}) > 1]
  return {name: {k: f.get(k) for k in varying} for name, f in flat.items()}
