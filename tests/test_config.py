"""Config loading: overrides are typed and checked; mistakes fail at load time, in one line."""
import re
import textwrap

import pytest

from encdec import config


@pytest.fixture
def config_file(tmp_path):
  path = tmp_path / "exp.py"
  path.write_text(textwrap.dedent("""
      from encdec import config

      def get_config(arg=None):
        arg = config.parse_arg(arg, size="small", layers=2)
        c = config.base()
        c.model.num_encoder_layers = arg.layers
        c.model.d_model = {"small": 64, "big": 512}[arg.size]
        return c
  """))
  return path


def test_load_with_arg_and_overrides(config_file):
  cfg = config.load(f"{config_file}:size=big,layers=5",
                    {"model.num_heads": 8, "optim.learning_rate": 1, "model.cross_attention": "mha"})
  assert cfg.model.d_model == 512 and cfg.model.num_encoder_layers == 5
  assert cfg.model.num_heads == 8 and cfg.optim.learning_rate == 1.0
  assert isinstance(cfg.optim.learning_rate, float)
  with pytest.raises(AttributeError):
    cfg.model.new_key = 1   # locked after load


def test_override_parsing():
  assert config.parse_overrides(["--config.model.d_model=64", "--config.model.norm=post",
                                 "--config.train.pack=True"]) == {
      "model.d_model": 64, "model.norm": "post", "train.pack": True}
  with pytest.raises(config.ConfigError, match="unrecognised argument '--bogus'"):
    config.parse_overrides(["--bogus"])


@pytest.mark.parametrize("overrides, message", [
    ({"model.d_modle": 3}, "unknown config key 'model.d_modle'; did you mean 'd_model'"),
    ({"modle.d_model": 3}, "unknown config key 'modle'"),
    ({"model.d_model": "big"}, "config key 'model.d_model' expects int, got 'big'"),
    ({"train.pack": 1}, "config key 'train.pack' expects bool"),
    ({"model.num_heads": True}, "expects int"),
    ({"train.num_steps": 0}, "'train.num_steps' must be >= 1, got 0"),
    ({"optim.learning_rate": -1e-3}, "'optim.learning_rate' must be > 0, got -0.001"),
    ({"optim.b2": 1.0}, "'optim.b2' must be >= 0 and < 1"),
    ({"checkpoint.keep": 0}, "'checkpoint.keep' must be >= 1"),
    ({"mesh.fsdp": 0}, "'mesh.fsdp' must be a positive device count or -1"),
    ({"decode.beam_size": 0}, "'decode.beam_size' must be >= 1"),
    ({"model.num_heads": 0}, "model.num_heads must be > 0"),
    ({"model.num_decoder_layers": -1}, "model.num_decoder_layers must be > 0"),
    ({"model.norm": "rms"}, "unknown model.norm 'rms'; valid: pre, post"),
    ({"model.cross_attention_layers": "every:0"}, "cross_attention_layers='every:0'"),
    ({"model.cross_attention": "nope"}, "unknown model.cross_attention 'nope'; valid: .*mha"),
    ({"optim.schedule": "exp"}, "unknown optim.schedule 'exp'; valid: constant, cosine"),
    ({"train.accum_steps": 3}, "not divisible by train.accum_steps=3"),
    ({"model.dropout_rate": 1.5}, "must be in \\[0, 1\\)"),
])
def test_bad_overrides_fail_with_one_line(config_file, overrides, message):
  with pytest.raises(config.ConfigError, match=message) as info:
    config.load(str(config_file), overrides)
  assert "\n" not in str(info.value)


def test_bad_paths_and_args(tmp_path, config_file):
  with pytest.raises(config.ConfigError, match="does not exist"):
    config.load(str(tmp_path / "missing.py"))
  with pytest.raises(config.ConfigError, match="bad config argument 'sise=big'"):
    config.load(f"{config_file}:sise=big")
  (tmp_path / "empty.py").write_text("x = 1\n")
  with pytest.raises(config.ConfigError, match="defines no get_config"):
    config.load(str(tmp_path / "empty.py"))


def test_a_variant_that_cannot_read_packed_batches_refuses_packing():
  with pytest.raises(config.ConfigError, match="train.pack=False"):
    config.load(None, {"model.cross_attention": "latent", "train.pack": True})


@pytest.mark.parametrize("spec, message", [
    ("g2p_cmudict:size=huge", "unknown config argument size='huge'; valid: tiny, small, base"),
    ("cross_attention_ablation:task=sort", "unknown config argument task='sort'; valid: "),
    ("no_such_config", r"the name of a packaged config \(algorithmic, bench, "),
])
def test_packaged_configs_reject_bad_arguments_in_one_line(spec, message):
  with pytest.raises(config.ConfigError, match=message) as info:
    config.load(spec)
  assert "\n" not in str(info.value)


def test_packaged_configs_load_by_name_and_by_their_old_checkout_path():
  assert config.resolve_path("g2p_cmudict") == config.DEFAULT_CONFIG
  assert config.resolve_path("configs/g2p_cmudict.py") == config.DEFAULT_CONFIG
  assert config.load("algorithmic:task=sort").task.name == "sort"


def test_a_corrupt_saved_config_names_its_file(tmp_path):
  path = tmp_path / "config.json"
  path.write_text('{"model": {"d_model": 64,')
  with pytest.raises(config.ConfigError, match=f"{re.escape(str(path))} is not valid JSON"):
    config.read_saved(path)


def test_model_section_is_the_model_schema():
  from encdec.model import schema  # pylint: disable=import-outside-toplevel
  assert config.base().model.to_dict() == schema.fields()
  assert not set(schema.fields(from_task=True)) & set(config.base().model)


def test_loading_a_config_imports_neither_flax_nor_tfds():
  import subprocess, sys  # pylint: disable=import-outside-toplevel,multiple-imports
  code = ("import sys; from encdec import config; config.load('algorithmic:task=copy'); "
          "config.load('g2p_cmudict', {'train.pack': False}); "
          "print(sorted(m for m in ('flax', 'tensorflow_datasets') if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]"
