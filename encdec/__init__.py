"""encdec: encoder–decoder transformers in JAX/Flax."""
__version__ = "0.1.0"
