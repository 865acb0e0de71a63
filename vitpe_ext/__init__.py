"""vitpe: resize Vision Transformer position embeddings, exactly as
F.interpolate would, without permute copies, with a deterministic backward.

    import vitpe_ext
    new = vitpe_ext.interpolate_pos_embed(pos_embed, (24, 24), mode="bicubic")

The op itself is torch.ops.vitpe.interpolate_pos_embed; importing this
package loads it (vitpe_ext._C) and registers its fake and autograd kernels.

Three wings, imports running one way (command -> integrations -> op):
    op/            the op as Python sees it: registration, public function, modes, profiles
    integrations/  torchvision and timm drop-ins, dynamic tables, LR groups
    command/       the `vitpe` command: checkpoints, plot, demo, bench
"""
import torch  # noqa: F401  (loads libtorch/libc10, which _C links against without an rpath)

from . import _C  # noqa: F401  (registers torch.ops.vitpe.* before the op wing uses them)
from . import op
from .op import MODES, PROFILES, interpolate_pos_embed
from . import ops, profiles  # noqa: F401  (the op wing under its public names)
from .integrations.dynamic import DynamicPosEmbed
from .integrations.param_groups import layer_decay_groups
from .integrations.rel_pos import resize_rel_pos_bias
from .integrations.schedules import warmup_constant, warmup_cosine
# vitpe_ext.torchvision and vitpe_ext.timm are imported on demand (they import those libraries).

from ._version import __version__
__all__ = ["interpolate_pos_embed", "MODES", "ops", "profiles", "PROFILES", "DynamicPosEmbed",
           "layer_decay_groups", "resize_rel_pos_bias", "warmup_cosine", "warmup_constant", "__version__"]
