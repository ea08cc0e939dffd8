"""Hypura: run GGUF models bigger than GPU memory and RAM, streaming weights from NVMe."""

__version__ = "0.1.0"
