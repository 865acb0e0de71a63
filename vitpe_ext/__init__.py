"""vitpe: resize Vision Transformer position embeddings, exactly as
F.interpolate would, without permute copies, with a deterministic backward.

    import vitpe_ext
    new = vitpe_ext.interpolate_pos_embed(pos_embed, (24, 24), mode="bicubic")

The op itself is torch.ops.vitpe.interpolate_pos_embed; importing this
package loads it (vitpe_ext._C) and registers its fake and autograd kernels.
"""
import torch  # noqa: F401  (loads libtorch/libc10, which _C links against without an rpath)

from . import _C  # noqa: F401  (registers torch.ops.vitpe.* before ops.py uses them)
from . import ops
from .ops import MODES, interpolate_pos_embed
from . import profiles
from .profiles import PROFILES
from .dynamic import DynamicPosEmbed
from .param_groups import layer_decay_groups
# vitpe_ext.torchvision and vitpe_ext.timm are imported on demand (they import those libraries).

__version__ = "0.1.0"
__all__ = ["interpolate_pos_embed", "MODES", "ops", "profiles", "PROFILES", "DynamicPosEmbed",
           "layer_decay_groups", "__version__"]
