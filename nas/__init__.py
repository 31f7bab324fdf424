"""Latency-aware neural architecture search for Transformers (distribution ``latnas``)."""

__version__ = "0.1.0"
