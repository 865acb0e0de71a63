"""vitpe_ext.param_groups is vitpe_ext.integrations.param_groups: the name users import it by."""
import sys

from .integrations import param_groups as _real

sys.modules[__name__] = _real
