"""Bad arguments, table-driven: each case runs in its own child process with a
timeout, and must raise the expected exception type with a one-line message
that names the argument. A crash (signal), a hang, a traceback on stderr, a
C++ backtrace in the message, or silent acceptance fails the case.

Children are forked from one server process that has imported torch and
vitpe_ext but never run an op (so no thread pool exists at fork time):
a fork costs milliseconds where a fresh interpreter costs seconds."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

# id -> (code run with f = the public function, op = the forward op, bop = the
#        backward op, cc = vitpe_ext.ops.check_call, x = a (2, 1 + 4*4, 3)
#        float32 table, np = numpy, FakeTensorMode;
#        expected exception type, or None where the call must succeed;
#        regexes the message must match)
V = "ValueError"
LIMIT_ADDRESS_SPACE = ("import os, resource; mapped = int(open('/proc/self/statm').read().split()[0]) * "
                       "os.sysconf('SC_PAGE_SIZE'); resource.setrlimit(resource.RLIMIT_AS, (mapped + 2**30,) * 2)\n")
CASES = {
    # -- the table
    "ndim_1d": ("f(torch.randn(17), (5, 5))", V, ["3-D", "1-D"]),
    "ndim_4d": ("f(torch.randn(1, 2, 17, 3), (5, 5))", V, ["3-D", "4-D"]),
    "ndim_4d_op": ("op(torch.randn(1, 2, 17, 3), [5, 5])", V, ["pos_embed", "3-D", "4-D"]),
    "ndim_0d_op": ("op(torch.tensor(1.0), [5, 5])", V, ["pos_embed", "3-D", "0-D"]),
    "table_is_list": ("f([[1.0, 2.0]], (5, 5))", V, ["pos_embed", "torch.Tensor", "list"]),
    "table_is_none": ("f(None, (5, 5))", V, ["pos_embed", "torch.Tensor"]),
    "table_is_numpy": ("f(np.zeros((1, 17, 3), np.float32), (5, 5))", V, ["pos_embed", "torch.Tensor"]),
    "table_sparse": ("f(x.to_sparse(), (5, 5))", V, ["pos_embed", "dense strided", "sparse"]),
    "table_sparse_csr": ("f(x[0].to_sparse_csr(), (5, 5))", V, ["pos_embed", "dense strided", "sparse_csr"]),
    "table_mkldnn": ("f(x.to_mkldnn(), (5, 5))", V, ["pos_embed", "dense strided", "mkldnn"]),
    "table_nested": ("f(torch.nested.nested_tensor([x[0], x[1]]), (5, 5))", V,
                     ["pos_embed", "dense strided", "nested"]),
    "table_quantized": ("f(torch.quantize_per_tensor(x, 0.1, 0, torch.qint8), (5, 5))", V,
                        ["pos_embed", "dense strided", "quantized"]),
    "table_sparse_with_profile": ("f(x.to_sparse(), (5, 5), profile='timm')", V, ["pos_embed", "dense strided"]),
    "dtype_int64": ("f(x.to(torch.int64), (5, 5))", V, ["pos_embed", "float32", "int64"]),
    "dtype_int32": ("f(x.to(torch.int32), (5, 5))", V, ["pos_embed", "float32", "int32"]),
    "dtype_uint8": ("f(x.to(torch.uint8), (5, 5))", V, ["pos_embed", "uint8"]),
    "dtype_bool": ("f(x.bool(), (5, 5))", V, ["pos_embed", "float32", "bool"]),
    "dtype_complex": ("f(x.to(torch.complex64), (5, 5))", V, ["pos_embed", "float32", "complex64"]),
    "dtype_float8": ("f(x.to(torch.float8_e4m3fn), (5, 5))", V, ["pos_embed", "float8_e4m3fn"]),
    "dtype_int64_op": ("op(x.to(torch.int64), [5, 5])", V, ["pos_embed", "int64"]),
    "dtype_int64_backward": ("bop(torch.zeros(2, 26, 3, dtype=torch.int64), 17, [5, 5])", V,
                             ["grad_output", "int64"]),
    "empty_channels_ok": ("f(torch.randn(2, 17, 0), (5, 5))", None, []),
    "empty_batch_ok": ("f(torch.randn(0, 17, 3), (5, 5))", None, []),
    "meta_table_ok": ("op(x.to('meta'), [5, 5])", None, []),

    # -- num_prefix_tokens
    "prefix_negative": ("f(x, (5, 5), num_prefix_tokens=-1)", V, ["num_prefix_tokens", "-1"]),
    "prefix_above_tokens": ("f(x, (5, 5), num_prefix_tokens=18)", V, ["num_prefix_tokens", "18"]),
    "prefix_all_tokens": ("f(x, (5, 5), num_prefix_tokens=17)", V, ["old_size"]),
    "prefix_huge": ("f(x, (5, 5), num_prefix_tokens=2**62)", V, ["num_prefix_tokens"]),
    "prefix_most_negative": ("op(x, [5, 5], None, -2**63)", V, ["num_prefix_tokens"]),
    "prefix_bool": ("f(x, (5, 5), num_prefix_tokens=True)", V, ["num_prefix_tokens", "bool"]),
    "prefix_float": ("f(x, (5, 5), num_prefix_tokens=1.0)", V, ["num_prefix_tokens", "float"]),
    "prefix_str": ("f(x, (5, 5), num_prefix_tokens='1')", V, ["num_prefix_tokens", "str"]),
    "prefix_none": ("f(x, (5, 5), num_prefix_tokens=None)", V, ["num_prefix_tokens"]),
    "prefix_numpy_ok": ("f(x, (5, 5), num_prefix_tokens=np.int64(1))", None, []),

    # -- new_size
    "new_size_zero": ("f(x, (0, 5))", V, ["new_size"]),
    "new_size_negative": ("f(x, (5, -2))", V, ["new_size"]),
    "new_size_four_ints": ("f(x, (2, 3, 4, 5))", V, ["new_size", "1, 2 or 3", r"\[2, 3, 4, 5\]"]),
    "new_size_empty": ("f(x, [])", V, ["new_size"]),
    "new_size_four_ints_op": ("op(x, [2, 3, 4, 5])", V, ["new_size", "1, 2 or 3"]),
    "new_size_one_int_op_ok": ("assert op(x, [2]).shape == (2, 3, 3)", None, []),
    "new_size_bools": ("f(x, [True, True])", V, ["new_size", "bool"]),
    "new_size_bool": ("f(x, True)", V, ["new_size", "bool"]),
    "new_size_numpy_bool": ("f(x, [np.bool_(True), 2])", V, ["new_size", "bool"]),
    "new_size_dict": ("f(x, {5: 1, 6: 2})", V, ["new_size", "dict"]),
    "new_size_set": ("f(x, {5, 6})", V, ["new_size", "set"]),
    "new_size_str": ("f(x, '55')", V, ["new_size", "str"]),
    "new_size_bytes": ("f(x, b'55')", V, ["new_size", "bytes"]),
    "new_size_float": ("f(x, 5.0)", V, ["new_size", "float"]),
    "new_size_float_pair": ("f(x, (5.0, 6.0))", V, ["new_size", "float"]),
    "new_size_none": ("f(x, None)", V, ["new_size", "None"]),
    "new_size_float_tensor": ("f(x, torch.tensor(5.0))", V, ["new_size"]),
    "new_size_bool_tensor": ("f(x, torch.tensor(True))", V, ["new_size"]),
    "new_size_2d_tensor": ("f(x, torch.tensor([[5, 6]]))", V, ["new_size"]),
    "new_size_nested_list": ("f(x, [[5], [6]])", V, ["new_size", "list"]),
    "new_size_numpy_int_ok": ("assert f(x, np.int64(6)).shape == (2, 37, 3)", None, []),
    "new_size_numpy_pair_ok": ("assert f(x, [np.int32(5), np.int64(6)]).shape == (2, 31, 3)", None, []),
    "new_size_tensor_0d_ok": ("assert f(x, torch.tensor(6)).shape == (2, 37, 3)", None, []),
    "new_size_tensor_1d_ok": ("assert f(x, torch.tensor([5, 6])).shape == (2, 31, 3)", None, []),
    "new_size_array_ok": ("assert f(x, np.array([5, 6])).shape == (2, 31, 3)", None, []),
    "new_size_torch_size_ok": ("assert f(x, torch.Size([5, 6])).shape == (2, 31, 3)", None, []),

    # -- old_size and square-grid inference
    "non_square_without_old_size": ("f(torch.randn(2, 1 + 3 * 4, 3), (5, 5))", V, ["old_size"]),
    "old_size_inconsistent": ("f(x, (5, 5), old_size=(3, 5))", V, ["old_size", "(3|15)"]),
    # a 3-D old grid against a 2-D new one: the message names no one rank's axes as "the" sides
    "old_size_rank_differs": ("f(torch.randn(1, 1 + 8, 3), (5, 5), old_size=(2, 2, 2))", V,
                              [r"old_size has 3 values but new_size has 2: both give one side per axis of the same "
                               r"grid \(\(length\), \(height, width\) or \(time, height, width\)\), got old_size "
                               r"\[2, 2, 2\] and new_size \[5, 5\]"]),
    "old_size_zero": ("f(x, (5, 5), old_size=(0, 16))", V, ["old_size"]),
    "old_size_negative": ("f(x, (5, 5), old_size=(-4, -4))", V, ["old_size"]),
    "old_size_product_overflows": ("f(x, (5, 5), old_size=(2**32, 2**32))", V, ["old_size"]),
    "old_size_product_wraps_to_16": ("f(x, (5, 5), old_size=(2**62, 4))", V, ["old_size"]),
    "old_size_bools": ("f(x, (5, 5), old_size=[True, True])", V, ["old_size", "bool"]),
    "old_size_str": ("f(x, (5, 5), old_size='44')", V, ["old_size", "str"]),
    "old_size_float": ("f(x, (5, 5), old_size=(4.0, 4.0))", V, ["old_size", "float"]),
    "old_size_three": ("op(x, [5, 5], [4, 4, 1])", V, ["old_size", "3 values", "new_size has 2"]),

    # -- grids of rank 1 and 3, suffix tokens
    "rank3_not_a_cube": ("f(x, (2, 3, 4))", V, ["cubic grid", "16 grid tokens", "old_size=\\(time, height, width\\)"]),
    "rank3_not_a_cube_op": ("op(x, [2, 3, 4])", V, ["cubic grid", "old_size"]),
    "rank3_cube_ok": ("assert f(torch.randn(2, 1 + 27, 3), [2, 4, 5]).shape == (2, 41, 3)", None, []),
    "rank3_old_size_rank_2": ("f(x, (2, 3, 4), old_size=(4, 4))", V, ["old_size", "2 values", "new_size has 3"]),
    "rank3_old_size_tokens": ("f(x, (2, 3, 4), old_size=(2, 2, 3))", V,
                              ["old_size", r"2\*2\*3 grid tokens", "16"]),
    "rank3_old_size_int_ok": ("assert f(torch.randn(1, 9, 2), (3, 3, 3), old_size=2, num_prefix_tokens=1)"
                              ".shape == (1, 28, 2)", None, []),
    "rank1_ok": ("assert f(x, [20]).shape == (2, 21, 3)", None, []),
    "rank1_old_size_two": ("f(x, [20], old_size=(4, 4))", V, ["old_size", "2 values", "new_size has 1"]),
    "rank1_no_grid_tokens": ("f(x, [3], num_prefix_tokens=17)", V, ["no grid tokens"]),
    "mode_trilinear_rank2": ("f(x, (5, 5), mode='trilinear')", V, ["'trilinear'", "rank 3", "rank 2", "'bilinear'"]),
    "mode_linear_rank3": ("f(torch.randn(1, 28, 2), (2, 2, 2), mode='linear')", V, ["'linear'", "rank 1", "bilinear"]),
    "mode_linear_rank1_ok": ("assert f(x, [5], mode='linear').shape == (2, 6, 3)", None, []),
    "mode_trilinear_rank3_ok": ("assert f(torch.randn(1, 28, 2), (2, 2, 2), mode='trilinear').shape == (1, 9, 2)",
                                None, []),
    "scale_factor_rank3_two": ("f(torch.randn(1, 28, 2), (4, 4, 4), scale_factor=(2.0, 2.0))", V,
                               ["scale_factor", "3 floats", "2 values"]),
    "scale_factor_rank3_one_ok": ("assert f(torch.randn(1, 28, 2), (4, 4, 4), scale_factor=1.5).shape == (1, 65, 2)",
                                  None, []),
    "suffix_negative": ("f(x, (5, 5), num_suffix_tokens=-1)", V, ["num_suffix_tokens", "-1"]),
    "suffix_above_tokens": ("f(x, (5, 5), num_suffix_tokens=17)", V, ["num_suffix_tokens", r"\[0, 16\]", "17"]),
    "suffix_bool": ("f(x, (5, 5), num_suffix_tokens=True)", V, ["num_suffix_tokens", "bool"]),
    "suffix_float": ("f(x, (5, 5), num_suffix_tokens=3.0)", V, ["num_suffix_tokens", "float"]),
    "suffix_not_square": ("f(x, (5, 5), num_suffix_tokens=3)", V, ["square grid", "13 grid tokens", "3 suffix"]),
    "suffix_ok": ("assert f(x, (5, 5), num_suffix_tokens=7).shape == (2, 33, 3)", None, []),
    "suffix_op": ("op(x, [5, 5], [4, 4], 1, 'bicubic', None, False, None, 2)", V,
                  ["old_size", r"4\*4 grid tokens but the table has 17 tokens - 1 prefix - 2 suffix = 14"]),
    "suffix_backward_tokens": ("bop(torch.randn(2, 26, 3), 17, [5, 5], None, 1, num_suffix_tokens=1)", V,
                               ["old_size|square grid"]),
    "suffix_backward_grad_tokens": ("bop(torch.randn(2, 26, 3), 19, [5, 5], None, 1, num_suffix_tokens=2)", V,
                                    ["grad_output has 26 tokens", r"1 \+ 5\*5 \+ 2 = 28"]),
    "suffix_backward_ok": ("assert bop(torch.randn(2, 28, 3), 19, [5, 5], None, 1, num_suffix_tokens=2).shape "
                           "== (2, 19, 3)", None, []),
    "suffix_fake": ("with FakeTensorMode():\n    assert op(torch.empty(1, 17, 8), [2, 3, 5], [2, 2, 3], 1, "
                    "num_suffix_tokens=4).shape == (1, 35, 8)", None, []),
    "grid_tokens_2pow63": ("f(torch.zeros(1, 1, 1).expand(1, 2**63 - 1, 1), 2)", V, ["square grid", "old_size"]),
    "grid_tokens_2pow63_empty": ("op(torch.empty(1, 2**63 - 1, 0), [2, 2])", V, ["square grid", "old_size"]),
    "grid_square_beyond_limit": ("op(torch.zeros(1, 1, 0).expand(1, 3037000499**2 + 1, 0), [2, 2])", V,
                                 ["limited", "3037000499"]),
    "grid_2pow62_square": ("f(torch.zeros(1, 1, 1).expand(1, 2**62 + 1, 1), 2)", V, ["limited", "2147483648"]),
    "new_size_beyond_limit": ("f(x, (2**25, 1))", V, ["limited", "new_size"]),

    # -- output size
    "output_overflows_int64": ("f(x, (2**31, 2**31))", V, ["too large|limited"]),
    "grid_overflows_int64": ("f(x, (2**62, 2**62))", V, ["too large|limited"]),
    "output_elements_overflow_int64": (
        "f(torch.randn(1, 17, 3).expand(2**40, 17, 3), (2**12, 2**12))", V, ["new_size", "too large"]),
    "output_beyond_memory": ("op(torch.randn(1, 197, 768), [2**22, 2**22])", V,
                             ["new_size", r"\[4194304, 4194304\]", "bytes", "memory"]),
    "output_beyond_memory_fp64": ("f(torch.randn(1, 197, 768, dtype=torch.float64), 2**15)", V,
                                  ["new_size", "bytes", "float64"]),
    "output_beyond_memory_batch": ("f(torch.randn(1, 17, 8).expand(2**30, 17, 8), 64)", V,
                                   ["new_size", "bytes"]),
    "backward_output_beyond_memory": ("bop(torch.randn(1, 5, 3), 1 + 2**46, [2, 2])", V,
                                      ["input_tokens", "bytes"]),
    # below the RAM limit but more than the allocator can give (address space
    # capped 1 GiB above what the child already maps): one line, no backtrace
    "output_allocation_fails": (LIMIT_ADDRESS_SPACE + "f(torch.randn(1, 17, 1024), (1200, 1200))", "RuntimeError",
                                ["could not allocate the output of 1 x 1440001 x 1024", "out of memory"]),
    "backward_allocation_fails": (LIMIT_ADDRESS_SPACE + "bop(torch.randn(1, 1 + 4, 1024), 1 + 1200 * 1200, [2, 2])",
                                  "RuntimeError", ["could not allocate the output of 1 x 1440001 x 1024"]),

    # -- mode and flags
    "unknown_mode": ("f(x, (5, 5), mode='cubic')", V,
                     ["cubic", "nearest", "nearest-exact", "bilinear", "bicubic", "area", "lanczos3"]),
    "unknown_mode_op": ("op(x, [5, 5], None, 1, 'no-such-mode')", V, ["mode", "no-such-mode"]),
    "mode_empty": ("f(x, (5, 5), mode='')", V, ["mode"]),
    "mode_upper_case": ("f(x, (5, 5), mode='BICUBIC')", V, ["mode", "BICUBIC"]),
    "mode_bytes": ("f(x, (5, 5), mode=b'bicubic')", V, ["mode", "bytes"]),
    "mode_int": ("f(x, (5, 5), mode=3)", V, ["mode", "int"]),
    "mode_list": ("f(x, (5, 5), mode=['bicubic'])", V, ["mode", "list"]),
    "antialias_nearest": ("f(x, (5, 5), mode='nearest', antialias=True)", V, ["antialias", "nearest"]),
    "antialias_nearest_exact": ("f(x, (5, 5), mode='nearest-exact', antialias=True)", V,
                                ["antialias", "nearest-exact"]),
    "antialias_area": ("f(x, (5, 5), mode='area', antialias=True)", V, ["antialias", "area"]),
    "antialias_int": ("f(x, (5, 5), antialias=2)", V, ["antialias", "int"]),
    "antialias_str": ("f(x, (5, 5), antialias='yes')", V, ["antialias", "str"]),
    "antialias_numpy_bool_ok": ("f(x, (5, 5), antialias=np.bool_(True))", None, []),
    "align_corners_nearest": ("f(x, (5, 5), mode='nearest', align_corners=True)", V,
                              ["align_corners", "nearest"]),
    "align_corners_nearest_exact": ("f(x, (5, 5), mode='nearest-exact', align_corners=True)", V,
                                    ["align_corners", "nearest-exact"]),
    "align_corners_area": ("f(x, (5, 5), mode='area', align_corners=True)", V, ["align_corners", "area"]),
    "align_corners_lanczos3": ("f(x, (5, 5), mode='lanczos3', align_corners=True)", V,
                               ["align_corners", "lanczos3"]),
    "align_corners_int": ("f(x, (5, 5), align_corners=2)", V, ["align_corners", "int"]),
    "align_corners_one": ("f(x, (5, 5), align_corners=1)", V, ["align_corners", "int"]),
    "align_corners_str": ("f(x, (5, 5), align_corners='True')", V, ["align_corners", "str"]),
    "align_corners_false_nearest_ok": ("f(x, (5, 5), mode='nearest', align_corners=False)", None, []),

    # -- scale_factor
    "scale_factor_zero": ("f(x, (5, 5), scale_factor=0.0)", V, ["scale_factor"]),
    "scale_factor_negative": ("f(x, (5, 5), scale_factor=(-1.25, 1.25))", V, ["scale_factor"]),
    "scale_factor_nan": ("f(x, (5, 5), scale_factor=float('nan'))", V, ["scale_factor"]),
    "scale_factor_inf": ("f(x, (5, 5), scale_factor=float('inf'))", V, ["scale_factor"]),
    "scale_factor_inconsistent": ("f(x, (5, 5), scale_factor=1.0)", V, ["scale_factor", "new_size"]),
    "scale_factor_inconsistent_one_axis": ("f(x, (5, 6), scale_factor=(1.25, 1.25))", V,
                                           ["scale_factor", "new_size"]),
    "scale_factor_huge": ("f(x, (5, 5), scale_factor=[1e20, 1e20])", V,
                          ["scale_factor", r"4e\+20", "^((?!-9223372036854775808).)*$"]),
    "scale_factor_huge_one_axis": ("f(x, (5, 5), scale_factor=[1.25, 1e300])", V, ["scale_factor", "e\\+300"]),
    "scale_factor_str": ("f(x, (5, 5), scale_factor='12')", V, ["scale_factor", "str"]),
    "scale_factor_bytes": ("f(x, (5, 5), scale_factor=b'12')", V, ["scale_factor", "bytes"]),
    "scale_factor_bool": ("f(x, (5, 5), scale_factor=True)", V, ["scale_factor", "bool"]),
    "scale_factor_bool_pair": ("f(x, (5, 5), scale_factor=[True, 1.25])", V, ["scale_factor", "bool"]),
    "scale_factor_dict": ("f(x, (5, 5), scale_factor={1.25: 1.25})", V, ["scale_factor", "dict"]),
    "scale_factor_three": ("f(x, (5, 5), scale_factor=(1.25, 1.25, 1.25))", V, ["scale_factor"]),
    "scale_factor_complex": ("f(x, (5, 5), scale_factor=1.25 + 0j)", V, ["scale_factor", "complex"]),
    "scale_factor_numpy_ok": ("f(x, (5, 5), scale_factor=np.float64(1.25))", None, []),
    "scale_factor_with_profile": ("f(x, (5, 5), scale_factor=1.25, profile='hf')", V,
                                  ["scale_factor", "profile"]),

    # -- profiles
    "profile_unknown": ("f(x, (5, 5), profile='nope')", V, ["profile", "nope", "timm"]),
    "profile_int": ("f(x, (5, 5), profile=3)", V, ["profile", "int"]),
    "profile_contradiction": ("f(x, (5, 5), profile='hf', antialias=True)", V, ["profile", "antialias"]),
    "profile_mode_not_allowed": ("f(x, (5, 5), profile='torchvision', mode='area')", V, ["profile", "mode"]),
    "profile_flag_type": ("f(x, (5, 5), profile='timm', antialias='no')", V, ["antialias", "str"]),
    "profile_new_size_type": ("f(x, [True, True], profile='timm')", V, ["new_size", "bool"]),

    # -- the backward op
    "backward_wrong_token_count": ("bop(torch.randn(2, 20, 3), 17, [5, 5])", V, ["grad_output", "26"]),
    "backward_ndim": ("bop(torch.randn(20, 3), 17, [5, 5])", V, ["grad_output", "3-D"]),
    "backward_bad_input_tokens": ("bop(torch.randn(2, 26, 3), 18, [5, 5])", V, ["old_size"]),
    "backward_negative_input_tokens": ("bop(torch.randn(1, 5, 3), -1, [2, 2])", V, ["input_tokens", "-1"]),
    "backward_input_tokens_2pow63": ("bop(torch.randn(1, 5, 3), 2**63 - 1, [2, 2])", V, ["square grid"]),
    "backward_input_tokens_beyond_limit": ("bop(torch.randn(1, 5, 3), 3037000499**2 + 1, [2, 2])", V,
                                           ["limited"]),
    "backward_unknown_mode": ("bop(torch.randn(2, 26, 3), 17, [5, 5], None, 1, 'cubic')", V, ["mode", "cubic"]),

    # -- the same checks without a table (dry runs, fake kernels)
    "check_call_ok": ("cc([1, 197, 768], torch.float32, 'cpu', [24, 24])", None, []),
    "check_call_prefix": ("cc([1, 21, 8], torch.float32, 'cpu', [4, 4], num_prefix_tokens=500)", V,
                          ["num_prefix_tokens", "500"]),
    "check_call_memory": ("cc([1, 197, 768], torch.float32, 'cpu', [2**20, 2**20])", V, ["new_size", "bytes"]),
    "check_call_meta_no_memory_limit": ("cc([1, 197, 768], torch.float32, 'meta', [2**20, 2**20])", None, []),
    "check_call_backward": ("cc([2, 20, 3], torch.float32, 'cpu', [5, 5], input_tokens=17)", V,
                            ["grad_output", "26"]),
    "fake_prefix": ("with FakeTensorMode():\n    op(torch.empty(1, 21, 8), [4, 4], None, 500)", V,
                    ["num_prefix_tokens", "500"]),
    "fake_mode": ("with FakeTensorMode():\n    op(torch.empty(1, 17, 8), [4, 4], None, 1, 'no-such-mode')", V,
                  ["mode", "no-such-mode"]),
    "fake_old_size": ("with FakeTensorMode():\n    op(torch.empty(1, 17, 8), [4, 4], [3, 5])", V, ["old_size"]),
    "fake_dtype": ("with FakeTensorMode():\n    op(torch.empty(1, 17, 8, dtype=torch.int64), [4, 4])", V,
                   ["pos_embed", "int64"]),
    "fake_too_large": ("with FakeTensorMode():\n    op(torch.empty(1, 197, 768), [2**20, 2**20])", V,
                       ["new_size", "bytes"]),
    "fake_backward": ("with FakeTensorMode():\n    bop(torch.empty(2, 20, 3), 17, [5, 5])", V,
                      ["grad_output", "26"]),
    "fake_ok": ("with FakeTensorMode():\n    assert op(torch.empty(1, 17, 8), [5, 6]).shape == (1, 31, 8)",
                None, []),
    "export_unknown_mode": (
        "class M(torch.nn.Module):\n"
        "    def forward(self, t):\n"
        "        return op(t, [5, 5], None, 1, 'no-such-mode')\n"
        "torch.export.export(M(), (x,))", V, ["unknown mode 'no-such-mode'"]),
    "export_dynamic_prefix": (
        "class M(torch.nn.Module):\n"
        "    def forward(self, t):\n"
        "        return f(t, [5, 5], num_prefix_tokens=500)\n"
        "torch.export.export(M(), (x,), dynamic_shapes=({1: torch.export.Dim('n', min=2)},))", V,
        ["num_prefix_tokens", "500"]),
}

SERVER = textwrap.dedent(r"""
    import json, os, sys, tempfile, time
    import numpy as np
    import torch
    import vitpe_ext
    from torch._subclasses.fake_tensor import FakeTensorMode

    def run_case(code):
        names = {"torch": torch, "np": np, "vitpe_ext": vitpe_ext, "FakeTensorMode": FakeTensorMode,
                 "f": vitpe_ext.interpolate_pos_embed, "op": torch.ops.vitpe.interpolate_pos_embed,
                 "bop": torch.ops.vitpe.interpolate_pos_embed_backward, "cc": vitpe_ext.ops.check_call,
                 "x": torch.randn(2, 1 + 4 * 4, 3)}
        try:
            exec(compile(code, "<case>", "exec"), names)
            return {"type": None, "message": ""}
        except Exception as e:
            return {"type": type(e).__name__, "message": str(e)}

    for line in sys.stdin:
        case_id, code, timeout = json.loads(line)
        result_file, err_file = tempfile.mkstemp()[1], tempfile.mkstemp()[1]
        pid = os.fork()
        if pid == 0:
            fd = os.open(err_file, os.O_WRONLY)
            os.dup2(fd, 2)
            result = run_case(code)
            with open(result_file, "w") as out:
                json.dump(result, out)
            sys.stderr.flush()
            os._exit(0)
        deadline, status = time.monotonic() + timeout, None
        while status is None:
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = st
            elif time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                status = "hang"
            else:
                time.sleep(0.002)
        if status == "hang":
            result = {"type": "HANG", "message": f"no answer in {timeout} s"}
        elif os.WIFSIGNALED(status) or os.WEXITSTATUS(status) != 0:
            result = {"type": "CRASH", "message": f"child ended with status {status}"}
        else:
            with open(result_file) as src:
                result = json.load(src)
        with open(err_file, errors="replace") as src:
            result["stderr"] = src.read()[-4000:]
        os.unlink(result_file), os.unlink(err_file)
        print(json.dumps([case_id, result]), flush=True)
""")

CASE_TIMEOUT_S = 30


def run_cases(cases):
    """Runs [(id, code)] each in a forked child; returns {id: result}. A case
    the server could not answer (the server itself died) is a CRASH."""
    lines = "".join(json.dumps([case_id, code, CASE_TIMEOUT_S]) + "\n" for case_id, code in cases)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", SERVER], input=lines, capture_output=True, text=True,
                          timeout=60 + 4 * len(cases), env=env)
    results = {}
    for line in proc.stdout.splitlines():
        case_id, result = json.loads(line)
        results[case_id] = result
    for case_id, _ in cases:
        results.setdefault(case_id, {"type": "CRASH", "stderr": proc.stderr[-2000:],
                                     "message": f"server exited with {proc.returncode}"})
    return results


@pytest.fixture(scope="module")
def results():
    return run_cases([(case_id, code) for case_id, (code, _, _) in CASES.items()])


def test_there_are_enough_cases():
    assert len(CASES) >= 100


def problems(result, expected_type, needles):
    """What is wrong with one case's result ([] if nothing)."""
    found = []
    kind, message, stderr = result["type"], result.get("message", ""), result.get("stderr", "")
    if kind in ("CRASH", "HANG"):
        return [f"{kind}: {message}\n{stderr}"]
    if "Traceback" in stderr or "Exception raised from" in stderr:
        found.append(f"printed a traceback:\n{stderr}")
    if expected_type is None:
        if kind is not None:
            found.append(f"raised {kind}: {message}")
        return found
    if kind is None:
        return found + ["raised nothing (silently accepted)"]
    if kind != expected_type:
        found.append(f"raised {kind}, not {expected_type}: {message}")
    if "\n" in message.strip() or "Exception raised from" in message or "frame #" in message:
        found.append(f"message is not one line:\n{message}")
    found += [f"message does not match {n!r}: {message}" for n in needles if not re.search(n, message)]
    return found


@pytest.mark.parametrize("case_id", list(CASES))
def test_bad_input(case_id, results):
    code, expected_type, needles = CASES[case_id]
    found = problems(results[case_id], expected_type, needles)
    assert not found, f"{code}:\n" + "\n".join(found)


def test_harness_catches_crash_hang_and_traceback(monkeypatch):
    """The harness itself: success, a signal, a hang and a printed traceback
    are each reported, and the cases after them still run."""
    monkeypatch.setattr(sys.modules[__name__], "CASE_TIMEOUT_S", 3)
    harness = [("_harness_no_error", "f(x, (2, 2))"),
               ("_harness_crash", "import os; os.kill(os.getpid(), 11)"),
               ("_harness_hang", "import time; time.sleep(3600)"),
               ("_harness_traceback", "import traceback\ntry:\n    1/0\nexcept Exception:\n"
                                      "    traceback.print_exc()\nraise ValueError('x')")]
    got = run_cases(harness + [("after", "f(x, (0, 5))")])
    assert problems(got["_harness_no_error"], None, []) == []
    assert got["_harness_crash"]["type"] == "CRASH"
    assert got["_harness_hang"]["type"] == "HANG"
    assert any("traceback" in p for p in problems(got["_harness_traceback"], "ValueError", []))
    assert problems(got["after"], "ValueError", ["new_size"]) == []
