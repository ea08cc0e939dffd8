"""GGUF inspection and the tier placement planner (pure Python)."""
