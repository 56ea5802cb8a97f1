"""Hydra config groups of ``python -m engine``; shipped in the wheel as ``engine.conf``."""
