"""Hugging Face checkpoints <-> encdec run directories (T5 v1.0/v1.1/mT5, BART, Marian).

    encdec import-hf SRC_DIR --workdir W      # hf.importer.import_checkpoint
    encdec export-hf W OUT_DIR                # hf.exporter.export_run

One concept per module:
  files.py      config.json and tensors in and out (safetensors' numpy API: no torch)
  families.py   an HF config.json <-> encdec model fields and special ids, per architecture
  weights.py    HF tensor names and layouts <-> the encdec parameter tree
  tokenizer.py  the checkpoint's own tokenizer (sentencepiece / `tokenizers`) for tasks
  importer.py   a checkpoint directory --> an encdec run directory (config.json + Orbax)
  exporter.py   an encdec run directory --> a checkpoint directory transformers loads

The model never knows where its weights came from: an import is a TransformerConfig (a preset
plus the fields the checkpoint's config decides) and a parameter tree. What differs between
the implementations is folded into the weights where that is exact (T5's unscaled attention
logits: the query kernels are multiplied by sqrt(head_dim); BART's position table is offset by
2 rows; Marian's sinusoids become a learned table) or set by a model field (tied_logits_scale,
norm_epsilon, activation gelu_exact). tests/test_hf_*.py check each family against
`transformers`.
"""
