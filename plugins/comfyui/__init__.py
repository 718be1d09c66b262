"""ComfyUI entry point of the HEIE node pack (ComfyUI imports this folder as a package)."""

from .heie_nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
