"""Offline checkpoint loading: Hugging Face folders (safetensors / PyTorch .bin, sharded or
not) and GGUF files. One weight-name table per checkpoint format lives in ``tables.py``."""
