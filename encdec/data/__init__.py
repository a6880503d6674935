"""Data: tokenizers, the task registry (tasks.py) and grain loading (pipeline.py)."""
