"""ONNX export of models that call vitpe's op (vitpe_ext.op.onnx_export).

    import vitpe_ext.onnx
    torch.onnx.export(model, args, dynamo=True)              # after the import, or
    torch.onnx.export(model, args, dynamo=True,
                      custom_translation_table=vitpe_ext.onnx.translation_table())

Importing vitpe_ext already registers the translation when torch's exporter
is loaded (vitpe_ext/op/onnx_hook.py); importing this module registers it at
once and warns where this torch offers no place for it, in which case
custom_translation_table= is the way. Needs onnxscript (and onnxruntime to
run the result).
"""
from .op.onnx_export import OnnxExportError, interpolate_pos_embed_onnx, register, translation_table

__all__ = ["translation_table", "register", "interpolate_pos_embed_onnx", "OnnxExportError"]

register()
