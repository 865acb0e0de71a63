"""vitpe_ext.profiles is vitpe_ext.op.profiles (the PROFILES table): the name users import it by."""
import sys

from .op import profiles as _real

sys.modules[__name__] = _real
