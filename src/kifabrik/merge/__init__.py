"""Merge: recombine LoRA adapters into new adapters or full models ("modular models")."""
