"""vitpe_ext.ops is the op wing's public surface, vitpe_ext.op (interpolate_pos_embed,
check_call, MODES, ...): the name users and scripts import it by."""
import sys

from . import op as _real

sys.modules[__name__] = _real
