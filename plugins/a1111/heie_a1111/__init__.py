"""Host-free logic of the HEIE AUTOMATIC1111/Forge extension. ``scripts/heie.py`` adapts the WebUI to
it; nothing here imports the WebUI's ``modules``, so it runs and is tested without the WebUI."""

from .hooks import after_image_saved, postprocess, postprocess_image
from .settings import REJECT_ACTIONS, Settings
from .verdict import RunState, Verdict, judge

__all__ = ["REJECT_ACTIONS", "RunState", "Settings", "Verdict", "after_image_saved", "judge", "postprocess",
           "postprocess_image"]
