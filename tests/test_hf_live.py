"""encdec against `transformers` itself (run when transformers and torch are installed:
`pip install -e '.[hf]'`; all marked slow).

- the committed fixtures are what tests/fixtures/hf/make_fixtures.py makes now;
- configurations the fixtures do not hold (separate Marian vocabularies, T5 with SwiGLU and
  3 + 2 layers, scaled BART embeddings) import to the same logits and greedy/beam outputs;
- an exported run loads in transformers and gives the original model's logits.
"""
import importlib.util
import json

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from encdec import decoding  # pylint: disable=wrong-import-position
from encdec.hf import exporter, files, importer  # pylint: disable=wrong-import-position
from hf_fixtures import FIXTURES, converted, finished_rows  # pylint: disable=wrong-import-position

pytestmark = pytest.mark.slow
_spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
make_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_fixtures)


@pytest.mark.parametrize("name", sorted(make_fixtures.SPECS))
def test_committed_fixtures_are_what_the_script_makes(name):
  model = make_fixtures.build(name)
  saved = files.read_tensors(FIXTURES / name)
  for key, value in model.state_dict().items():
    if key in saved:
      np.testing.assert_array_equal(saved[key], value.numpy(), err_msg=key)
  expected = np.load(FIXTURES / name / "expected.npz")
  for key, value in make_fixtures.reference(name, model).items():
    # rtol: PyTorch's float32 sums depend on its thread count (T5's unscaled logits reach ~8).
    np.testing.assert_allclose(value, expected[key], atol=1e-5, rtol=1e-5, err_msg=key)


# Configurations compared live only: (fixture spec to start from, config changes).
LIVE = {
    "marian_separate_vocab": ("marian", dict(share_encoder_decoder_embeddings=False,
                                             decoder_vocab_size=64)),
    "t5_swiglu_3_2": ("t5_v1_1", dict(feed_forward_proj="gated-silu", num_layers=3,
                                      num_decoder_layers=2)),
    "bart_scaled": ("bart", dict(scale_embedding=True)),
}


@pytest.mark.parametrize("name", sorted(LIVE))
def test_more_configurations_equal_transformers(name, tmp_path, monkeypatch):
  """Logits within 1e-4, greedy equal, beam equal on the rows transformers finished."""
  base, changes = LIVE[name]
  model_class, config_class, kwargs, specials = make_fixtures.SPECS[base]
  monkeypatch.setitem(make_fixtures.SPECS, base, (model_class, config_class,
                                                  {**kwargs, **changes}, specials))
  directory = make_fixtures.write(base, tmp_path / base)
  module, variables, e = converted(base, root=tmp_path)
  logits = module.apply(variables, e["src"], e["tgt_in"])
  np.testing.assert_allclose(np.asarray(logits), e["logits"], atol=1e-4, rtol=0)
  greedy = decoding.greedy(module, variables, e["src"], make_fixtures.MAX_NEW_TOKENS)
  np.testing.assert_array_equal(np.asarray(greedy), e["greedy"])
  beam = np.asarray(decoding.beam_search(module, variables, e["src"], 4,
                                         make_fixtures.MAX_NEW_TOKENS, alpha=0.0))
  finished = finished_rows(e["beam"], module.config.eos_id)
  np.testing.assert_array_equal(beam[finished], e["beam"][finished])
  assert json.loads((directory / "config.json").read_text())["architectures"] == [model_class]


@pytest.mark.parametrize("name", ["t5_v1_0", "bart_untied", "marian"])
def test_exported_run_loads_in_transformers(name, tmp_path):
  importer.import_checkpoint(FIXTURES / name, tmp_path / "run")
  out = exporter.export_run(tmp_path / "run", tmp_path / "out")
  model = transformers.AutoModelForSeq2SeqLM.from_pretrained(out).eval()
  e = np.load(FIXTURES / name / "expected.npz")
  with torch.no_grad():
    logits = model(input_ids=torch.tensor(e["src"]),
                   attention_mask=torch.tensor(e["attention_mask"]),
                   decoder_input_ids=torch.tensor(e["tgt_in"])).logits.numpy()
  np.testing.assert_allclose(logits, e["logits"], atol=1e-4, rtol=0)
