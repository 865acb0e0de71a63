"""The integrations wing: the op inside other libraries' models and training.

    torchvision.py   torchvision's interpolate_embeddings through vitpe, patch(), make_dynamic()
    timm.py          timm's resample_abs_pos_embed through vitpe, patch()
    rel_pos.py       relative-position-bias tables (Swin, BEiT, LeViT, MaxViT); timm's three resizers
    transformers.py  HF transformers' interpolate_pos_encoding (ViT, DeiT, Dinov2, CLIP, ...) via vitpe, patch()
    hf_recipes.py    what each HF model's interpolate_pos_encoding computes (the drop-in's and the command's)
    dynamic.py       DynamicPosEmbed: a table for any grid, cached while no gradient is wanted
    param_groups.py  layer-wise learning-rate groups for torchvision and timm ViTs
    schedules.py     warmup + cosine/constant lr schedules that keep each group's own lr
    sincos.py        MAE's and big_vision's fixed 2-D sin-cos tables
    patch_embed.py   a new patch size: the patch kernel resampled (FlexiViT) with the table
    provenance.py    the record of how a table was resized, and the mismatch warning
    _patching.py     nesting patches of a library's function

Built on vitpe_ext.op only; nothing here imports vitpe_ext.command. Importing
this package imports neither torchvision, timm nor transformers: torchvision.py,
timm.py and transformers.py load them when called, and the package does not
import those three modules.
"""
