"""README's "Pretrained models" fine-tuning example, run as written on an imported fixture:
only the cross-attention trains; every other parameter stays bit-identical (slow: it trains)."""
import pathlib
import re

import flax.traverse_util
import jax
import numpy as np
import pytest

from encdec import cli, run as run_lib
from encdec.hf import importer
from hf_fixtures import FIXTURES

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def readme_finetune_config() -> str:
  """The finetune.py of README's Pretrained models section."""
  section = README.read_text().split("## Pretrained models", 1)[1]
  return re.search(r"```python\n(# finetune\.py.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_readme_example_trains_only_cross_attention(tmp_path):
  imported, tuned = tmp_path / "imported", tmp_path / "tuned"
  importer.import_checkpoint(FIXTURES / "bart", imported)
  (tmp_path / "finetune.py").write_text(readme_finetune_config())
  corpus = tmp_path / "train.tsv"
  corpus.write_text("".join(f"w{4 + i % 50} w{5 + i % 40}\tw{6 + i % 30} w{7 + i % 20}\n"
                            for i in range(40)))
  assert cli.main(["train", "--config", f"{tmp_path / 'finetune.py'}:{imported}",
                   "--workdir", str(tuned), f"--config.task.train_path={corpus}",
                   f"--config.task.dev_path={corpus}", f"--config.task.test_path={corpus}",
                   "--config.optim.trainable=cross_attention/", "--config.train.num_steps=3",
                   "--config.optim.learning_rate=1e-2", "--config.optim.warmup_steps=1",
                   "--config.train.batch_size=8", "--config.eval.batch_size=40",
                   "--config.task.max_src_len=8", "--config.task.max_tgt_len=8"]) == 0
  before = flax.traverse_util.flatten_dict(jax.device_get(run_lib.load(imported).params), sep="/")
  after = flax.traverse_util.flatten_dict(jax.device_get(run_lib.load(tuned).params), sep="/")
  assert before.keys() == after.keys()
  changed = {k for k in before if not np.array_equal(before[k], after[k])}
  assert changed and all("cross_attention/" in k for k in changed), changed
  assert all(k in changed for k in before if "cross_attention/" in k and k.endswith("kernel"))
