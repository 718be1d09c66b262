"""Host-free logic of the HEIE AUTOMATIC1111/Forge extension. ``scripts/heie.py`` adapts the WebUI to
it; nothing here imports the WebUI's ``modules`` or any package outside the standard library (PIL is the
WebUI's own), so it runs and is tested without the WebUI and never fights the WebUI's pinned packages."""

from .hooks import after_image_saved, before_image_saved, begin_job, postprocess, postprocess_image
from .http_client import HeieError, HttpClient
from .settings import OPTIONS, REJECT_ACTIONS, Settings
from .verdict import Verdict, judge

__all__ = ["OPTIONS", "REJECT_ACTIONS", "HeieError", "HttpClient", "Settings", "Verdict", "after_image_saved",
           "before_image_saved", "begin_job", "judge", "postprocess", "postprocess_image"]
