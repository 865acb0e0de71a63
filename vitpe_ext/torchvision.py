"""vitpe_ext.torchvision is vitpe_ext.integrations.torchvision: the name users import it by.
Imported on demand only, as importing vitpe_ext must not import torchvision."""
import sys

from .integrations import torchvision as _real

sys.modules[__name__] = _real
