"""Run by the WebUI at start-up: installs heie-client from this repository when it is missing."""

from __future__ import annotations

import os

import launch  # the WebUI's own module; this file only runs inside the WebUI

_CLIENT = os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "python")

if not launch.is_installed("heie_client"):
    if os.path.isfile(os.path.join(_CLIENT, "pyproject.toml")):
        launch.run_pip(f'install "{os.path.abspath(_CLIENT)}"', "heie-client for the HEIE extension")
    else:
        print("HEIE: install heie-client into the WebUI's Python: pip install /path/to/heie/plugins/python")
