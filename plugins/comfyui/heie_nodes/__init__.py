"""HEIE node pack logic. Nothing here imports ComfyUI at module level: the host's modules are reached
only through :mod:`.host`, inside the calls ComfyUI makes, so the nodes also run (and are tested)
without ComfyUI installed."""

from . import nodes, regions_node
from .nodes import HeieEvaluate, HeieFilter, HeieRerank
from .regions_node import HeieRegions

NODE_CLASS_MAPPINGS = {**nodes.NODE_CLASS_MAPPINGS, **regions_node.NODE_CLASS_MAPPINGS}
NODE_DISPLAY_NAME_MAPPINGS = {**nodes.NODE_DISPLAY_NAME_MAPPINGS, **regions_node.NODE_DISPLAY_NAME_MAPPINGS}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "HeieEvaluate", "HeieFilter", "HeieRegions", "HeieRerank"]
