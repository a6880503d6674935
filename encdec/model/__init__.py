"""Models: `build(cfg.model)` gives an EncoderDecoder; cross-attention variants by name.

Importing this package is cheap (the schema and the variant registry); the Flax modules are
imported when `build` or `EncoderDecoder` is first used.
"""
from encdec.model.schema import CROSS_ATTENTION, TransformerConfig

__all__ = ["CROSS_ATTENTION", "EncoderDecoder", "TransformerConfig", "build"]


def __getattr__(name: str):
  if name in ("EncoderDecoder", "build"):
    from encdec.model import transformer  # pylint: disable=import-outside-toplevel
    return getattr(transformer, name)
  raise AttributeError(f"module 'encdec.model' has no attribute {name!r}")
