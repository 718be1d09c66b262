"""ComfyUI entry point of the HEIE node pack (ComfyUI imports this folder as a package).

The pack carries its own ``heie_client`` (a link to ``plugins/python/src/heie_client`` in the HEIE
repository, copied as files by ``tools/export_repo.py``), so that it installs from its folder and
``requirements.txt`` alone, as ComfyUI-Manager installs packs. The pack's folder goes first on
``sys.path``: the bundled client, which matches these nodes, wins over any other ``heie-client`` that is
pip-installed in ComfyUI's environment."""

import os
import sys

_PACK = os.path.dirname(os.path.abspath(__file__))
if os.path.isdir(os.path.join(_PACK, "heie_client")) and _PACK not in sys.path:
    sys.path.insert(0, _PACK)

from .heie_nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
