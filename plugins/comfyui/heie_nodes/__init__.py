"""HEIE node pack logic. Nothing here imports ComfyUI at module level: the host's modules are reached
only through :mod:`.host`, inside the calls ComfyUI makes, so the nodes also run (and are tested)
without ComfyUI installed."""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, HeieEvaluate, HeieFilter, HeieRerank

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "HeieEvaluate", "HeieFilter", "HeieRerank"]
