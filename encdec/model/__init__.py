"""Models: `build(cfg.model)` gives an EncoderDecoder; cross-attention variants by name."""
from encdec.model.cross_attention import CROSS_ATTENTION
from encdec.model.transformer import EncoderDecoder, TransformerConfig, build

__all__ = ["CROSS_ATTENTION", "EncoderDecoder", "TransformerConfig", "build"]
