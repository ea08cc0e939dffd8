"""Ollama- and OpenAI-compatible HTTP API (Flask) over the Hypura engine."""
