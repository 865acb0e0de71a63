"""vitpe_ext.transformers is vitpe_ext.integrations.transformers: the name users import it by.
Imported on demand only, as importing vitpe_ext must not import transformers."""
import sys

from .integrations import transformers as _real

sys.modules[__name__] = _real
