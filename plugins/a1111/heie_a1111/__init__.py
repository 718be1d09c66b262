"""Host-free logic of the HEIE AUTOMATIC1111/Forge extension. ``scripts/heie.py`` adapts the WebUI to
it; nothing here imports the WebUI's ``modules``. It talks to the server through ``heie_client`` over
HTTP, which needs only the standard library (PIL and numpy are the WebUI's own), so it never fights the
WebUI's pinned packages (protobuf 3.20 …). ``heie_client`` sits beside this package: a link into
``plugins/python`` in the repository, the package's source copied in by ``tools/export_repo.py``."""

from heie_client import Client, HeieError

from .hooks import after_image_saved, before_image_saved, begin_job, postprocess, postprocess_image
from .settings import OPTIONS, REJECT_ACTIONS, Settings
from .verdict import Verdict, judge

__all__ = ["OPTIONS", "REJECT_ACTIONS", "Client", "HeieError", "Settings", "Verdict", "after_image_saved",
           "before_image_saved", "begin_job", "judge", "postprocess", "postprocess_image"]
