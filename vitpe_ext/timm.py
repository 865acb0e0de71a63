"""vitpe_ext.timm is vitpe_ext.integrations.timm: the name users import it by.
Imported on demand only, as importing vitpe_ext must not import timm."""
import sys

from .integrations import timm as _real

sys.modules[__name__] = _real
