// shim.cpp — the only C++ in vitpe: registers torch.ops.vitpe.* on the LibTorch
// stable ABI (torch/csrc/stable, target 2.11) and turns tensors into the C
// kernels' pointers and strides. It checks arguments (messages name them),
// allocates, picks torch's thread pool or the current CUDA stream, and calls
// C. No arithmetic on data happens here.
//
// Errors are thrown as std::invalid_argument (Python ValueError) or
// std::runtime_error: on torch 2.11 a failing STD_TORCH_CHECK inside a
// stable-ABI kernel kills the process, a plain C++ throw does not.
//
// The file is compiled twice, into two Python modules, so that one wheel
// serves CPU-only and CUDA torch alike: vitpe_ext._C (this file: schemas, the
// CPU kernels, links libtorch only) and vitpe_ext._C_cuda (shim_cuda.cpp:
// VITPE_CUDA_MODULE, the CUDA kernels and only the CUDA registrations; links
// libtorch_cuda, which a CPU-only torch does not have, so vitpe_ext imports it
// only under a CUDA torch: vitpe_ext/op/backends.py).
#include <Python.h>

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#ifdef VITPE_WITH_CUDA
#include <torch/csrc/stable/accelerator.h>
#endif
#include <torch/headeronly/core/ScalarType.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include "vitpe.h"

#ifdef VITPE_WITH_CUDA
// Declared by torch's shim.h only under USE_CUDA; this is its C signature.
extern "C" int32_t aoti_torch_get_current_cuda_stream(int32_t device_index, void** ret_stream);
#endif

#ifndef VITPE_CUDA_MODULE
// The Python module vitpe_ext._C: importing it runs the registrations below.
// It also carries the kernels' mode table, so Python reads the modes instead
// of copying them: _C.modes is a tuple of (name, align_corners accepted,
// antialias "never"/"optional"/"always", scale_factor accepted),
// _C.default_mode a name and _C.mode_aliases F.interpolate's per-rank names.
// No pybind11: the extension builds against the limited API (abi3).
static PyObject* vitpe_mode_table(void) {
  static const char* antialias_names[] = {"never", "optional", "always"};
  PyObject* modes = PyTuple_New(VITPE_MODE_COUNT);
  if (!modes) return nullptr;
  for (int m = 0; m < VITPE_MODE_COUNT; m++) {
    vitpe_mode_info info;
    if (vitpe_mode_get_info(m, &info) != VITPE_OK || info.antialias < 0 || info.antialias > 2) {
      Py_DECREF(modes);
      PyErr_SetString(PyExc_RuntimeError, "vitpe: the kernels' mode table is inconsistent");
      return nullptr;
    }
    PyObject* row = Py_BuildValue("(sNsN)", info.name, PyBool_FromLong(info.align_corners),
                                  antialias_names[info.antialias], PyBool_FromLong(info.scale_factor));
    if (!row) {
      Py_DECREF(modes);
      return nullptr;
    }
    PyTuple_SetItem(modes, m, row);  // steals row
  }
  return modes;
}

// Set by _C._attach_cuda once the CUDA module is loaded: check_call (the fake
// kernels, dry runs) then refuses a CUDA output larger than the device as the
// CUDA kernel itself would.
static int (*cuda_device_memory)(size_t* bytes, int device) = nullptr;

static PyObject* vitpe_attach_cuda(PyObject*, PyObject* capsule) {
  void* query = PyCapsule_GetPointer(capsule, "vitpe_ext._C_cuda.device_memory");
  if (!query) return nullptr;
  cuda_device_memory = reinterpret_cast<int (*)(size_t*, int)>(query);
  Py_RETURN_NONE;
}

static PyMethodDef vitpe_methods[] = {
    {"_attach_cuda", vitpe_attach_cuda, METH_O,
     "Give the CUDA module's device-memory query to this module (vitpe_ext/op/backends.py)."},
    {nullptr, nullptr, 0, nullptr}};

// _C.mode_aliases: F.interpolate's per-rank names of modes, a tuple of
// (alias, rank, mode name) (VITPE_MODE_ALIASES).
static PyObject* vitpe_mode_aliases(void) {
  PyObject* aliases = PyList_New(0);
  const char* name = nullptr;
  int rank = 0, mode = 0;
  for (int i = 0; aliases && vitpe_mode_alias(i, &name, &rank, &mode) == VITPE_OK; i++) {
    PyObject* row = Py_BuildValue("(sis)", name, rank, vitpe_mode_name(mode));
    if (!row || PyList_Append(aliases, row) != 0) {
      Py_XDECREF(row);
      Py_DECREF(aliases);
      return nullptr;
    }
    Py_DECREF(row);
  }
  if (!aliases) return nullptr;
  PyObject* tuple = PyList_AsTuple(aliases);
  Py_DECREF(aliases);
  return tuple;
}

extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, vitpe_methods};
  PyObject* m = PyModule_Create(&module);
  if (!m) return nullptr;
  PyObject* modes = vitpe_mode_table();
  if (!modes || PyModule_AddObject(m, "modes", modes) != 0) {
    Py_XDECREF(modes);
    Py_DECREF(m);
    return nullptr;
  }
  if (PyModule_AddStringConstant(m, "default_mode", vitpe_mode_name(VITPE_MODE_DEFAULT)) != 0) {
    Py_DECREF(m);
    return nullptr;
  }
  PyObject* aliases = vitpe_mode_aliases();
  if (!aliases || PyModule_AddObject(m, "mode_aliases", aliases) != 0) {
    Py_XDECREF(aliases);
    Py_DECREF(m);
    return nullptr;
  }
  return m;
}
#else
static int (*cuda_device_memory)(size_t* bytes, int device) = vitpe_cuda_device_memory;

static PyObject* vitpe_diagnose(PyObject*, PyObject* device) {
  const long index = PyLong_AsLong(device);
  if (index == -1 && PyErr_Occurred()) return nullptr;
  char why[512];
  vitpe_cuda_diagnose(why, sizeof(why), static_cast<int>(index));
  return PyUnicode_FromString(why);
}

static PyMethodDef vitpe_cuda_methods[] = {
    {"diagnose", vitpe_diagnose, METH_O,
     "diagnose(device_index) -> why the CUDA kernels cannot run there (old driver, no kernels for "
     "that GPU), with the fix; '' if nothing is in the way."},
    {nullptr, nullptr, 0, nullptr}};

// vitpe_ext._C_cuda: importing it registers the CUDA kernels (below). It holds
// the device-memory query for _C (a capsule) and diagnose().
extern "C" PyObject* PyInit__C_cuda(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C_cuda", nullptr, -1, vitpe_cuda_methods};
  PyObject* m = PyModule_Create(&module);
  if (!m) return nullptr;
  PyObject* query = PyCapsule_New(reinterpret_cast<void*>(vitpe_cuda_device_memory),
                                  "vitpe_ext._C_cuda.device_memory", nullptr);
  if (!query || PyModule_AddObject(m, "device_memory", query) != 0) {
    Py_XDECREF(query);
    Py_DECREF(m);
    return nullptr;
  }
  return m;
}
#endif

namespace {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

// Messages are built with std::to_string / snprintf and string concatenation,
// never iostreams: formatting a number through an ostream crashed the process
// on the GPU machine (torch 2.11 wheel, extension built by that machine's g++),
// the typical symptom of a libstdc++ locale facet from newer headers than the
// loaded runtime. These paths only touch the string class.
inline std::string piece(const char* s) { return s; }
inline std::string piece(const std::string& s) { return s; }
inline std::string piece(char c) { return std::string(1, c); }
inline std::string piece(int v) { return std::to_string(v); }
inline std::string piece(long v) { return std::to_string(v); }
inline std::string piece(long long v) { return std::to_string(v); }
inline std::string piece(unsigned long v) { return std::to_string(v); }
inline std::string piece(double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

template <typename... Args>
[[noreturn]] void fail(const Args&... parts) {
  std::string message;
  ((message += piece(parts)), ...);
  throw std::invalid_argument(message);
}

// A whole number held in a double, printed without a fraction or exponent
// while it fits int64 (sizes in messages), else in %g form.
std::string integral(double v) {
  if (std::fabs(v) < 0x1p62) return std::to_string(static_cast<long long>(v));
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.6g", v);
  return buf;
}

std::string fmt_sizes(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); i++) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

void check_status(int status, const char* what) {
  if (status == VITPE_OK) return;
  std::string message = std::string("vitpe: ") + what + " failed: " + vitpe_status_str(status);
  if (status == VITPE_EINVAL || status == VITPE_EOVERFLOW) throw std::invalid_argument(message);
  throw std::runtime_error(message);
}

vitpe_mode_info mode_info(int mode) {
  vitpe_mode_info info{};
  check_status(vitpe_mode_get_info(mode, &info), "reading the mode table");
  return info;
}

// The names of the modes `pick` selects, in table order: "a, b and c" (or,
// with last = ", ", "a, b, c").
template <typename Pick>
std::string mode_names(Pick pick, const char* last = " and ") {
  std::vector<std::string> names;
  for (int m = 0; m < VITPE_MODE_COUNT; m++)
    if (pick(mode_info(m))) names.push_back(mode_info(m).name);
  std::string s;
  for (size_t i = 0; i < names.size(); i++)
    s += (i == 0 ? "" : i + 1 == names.size() ? last : ", ") + names[i];
  return s;
}

int parse_mode(const std::string& mode, int rank) {
  const int m = vitpe_mode_lookup(mode.c_str(), rank);
  if (m >= 0) return m;
  const char* name = nullptr;
  int alias_rank = 0, alias_mode = 0;
  for (int i = 0; vitpe_mode_alias(i, &name, &alias_rank, &alias_mode) == VITPE_OK; i++)
    if (mode == name)
      fail("interpolate_pos_embed: mode '", mode, "' is F.interpolate's name for grids of rank ", alias_rank,
           "; this grid has rank ", rank, ": use '", vitpe_mode_name(alias_mode), "' (",
           vitpe_mode_name(alias_mode), " along every axis, at any rank)");
  fail("interpolate_pos_embed: unknown mode '", mode, "'; valid modes are ",
       mode_names([](const vitpe_mode_info&) { return true; }, ", "));
}

const char* dtype_name(ScalarType t) {
  switch (t) {
    case ScalarType::Byte: return "uint8";
    case ScalarType::Char: return "int8";
    case ScalarType::Short: return "int16";
    case ScalarType::Int: return "int32";
    case ScalarType::Long: return "int64";
    case ScalarType::Bool: return "bool";
    case ScalarType::ComplexHalf: return "complex32";
    case ScalarType::ComplexFloat: return "complex64";
    case ScalarType::ComplexDouble: return "complex128";
    case ScalarType::UInt16: return "uint16";
    case ScalarType::UInt32: return "uint32";
    case ScalarType::UInt64: return "uint64";
    case ScalarType::Float8_e5m2: return "float8_e5m2";
    case ScalarType::Float8_e4m3fn: return "float8_e4m3fn";
    case ScalarType::Float8_e5m2fnuz: return "float8_e5m2fnuz";
    case ScalarType::Float8_e4m3fnuz: return "float8_e4m3fnuz";
    case ScalarType::Float8_e8m0fnu: return "float8_e8m0fnu";
    default: return nullptr;
  }
}

int parse_dtype(ScalarType t, const char* arg) {
  switch (t) {
    case ScalarType::Float: return VITPE_F32;
    case ScalarType::Double: return VITPE_F64;
    case ScalarType::Half: return VITPE_F16;
    case ScalarType::BFloat16: return VITPE_BF16;
    default:
      if (const char* name = dtype_name(t))
        fail("interpolate_pos_embed: ", arg, " must be float32, float64, float16 or bfloat16, got ",
             name);
      fail("interpolate_pos_embed: ", arg,
           " must be float32, float64, float16 or bfloat16, got ScalarType code ",
           static_cast<int>(t));
  }
}

bool mul_overflows(int64_t a, int64_t b, int64_t* r) { return __builtin_mul_overflow(a, b, r); }

// floor(sqrt(n)) for 0 <= n < 2^63. The double estimate is off by at most one
// near 2^63; the corrections square in 128 bits, where (side+1)^2 cannot wrap.
int64_t isqrt(int64_t n) {
  int64_t side = static_cast<int64_t>(std::sqrt(static_cast<double>(n)));
  while (side > 0 && static_cast<__int128>(side) * side > n) side--;
  while (static_cast<__int128>(side + 1) * (side + 1) <= n) side++;
  return side;
}

// floor(cbrt(n)) for 0 <= n < 2^63, corrected in 128 bits as isqrt.
int64_t icbrt(int64_t n) {
  int64_t side = static_cast<int64_t>(std::cbrt(static_cast<double>(n)));
  while (side > 0 && static_cast<__int128>(side) * side * side > n) side--;
  while (static_cast<__int128>(side + 1) * (side + 1) * (side + 1) <= n) side++;
  return side;
}

// The names of a grid's axes, per rank, for messages.
const char* axes_names(int rank) {
  return rank == 1 ? "(length)" : rank == 2 ? "(height, width)" : "(time, height, width)";
}

// "a*b*c" of the sizes.
std::string fmt_product(const std::vector<int64_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); i++) s += (i ? "*" : "") + std::to_string(v[i]);
  return s;
}

// Everything a call decides before touching data: the axes of the resize
// (outermost first: (W), (H, W) or (T, H, W)), the prefix and suffix.
struct Resize {
  int rank = 2;
  vitpe_axis axes[VITPE_MAX_RANK]{};
  int64_t prefix = 0, suffix = 0;
  int dtype = VITPE_F32;
  // The sample positions the axes point to, where given: shared, so a copy
  // of the Resize keeps its axes' pointers valid.
  std::shared_ptr<const std::vector<double>> positions;

  int64_t grid(bool out) const {  // only after checked_output_tokens: three checked sides can still wrap
    int64_t n = 1;
    for (int i = 0; i < rank; i++) n *= out ? axes[i].out_size : axes[i].in_size;
    return n;
  }
  std::vector<int64_t> sizes(bool out) const {
    std::vector<int64_t> v;
    for (int i = 0; i < rank; i++) v.push_back(out ? axes[i].out_size : axes[i].in_size);
    return v;
  }
};

// The sample positions of a call, checked with the rules of vitpe_axis
// (vitpe.h) and one line naming the broken one: one position per output of
// every axis, concatenated outermost axis first, for a mode that samples at
// a point and without the options that set the uniform mapping.
std::vector<double> checked_positions(const char* who, const std::vector<double>& p,
                                      const std::vector<int64_t>& new_size,
                                      int mode, const std::string& mode_name, bool ac, bool antialias,
                                      bool has_scale_factor, const char* const* axis_names) {
  if (!vitpe_mode_samples_at(mode)) {
    std::string names;
    for (int m = 0, n = 0; m < VITPE_MODE_COUNT; m++)
      if (vitpe_mode_samples_at(m)) names += (n++ ? ", " : "") + std::string(vitpe_mode_name(m));
    fail(who, ": sample_positions need a mode that samples at a point (", names, "), not mode '", mode_name, "'");
  }
  if (ac || antialias || has_scale_factor)
    fail(who, ": sample_positions replace the uniform mapping that ",
         ac ? "align_corners=True" : antialias ? "antialias=True" : "scale_factor", " sets; pass one or the other");
  int64_t total = 0;
  std::string sum;
  for (size_t i = 0; i < new_size.size(); i++) {
    total += new_size[i];
    sum += (i ? " + " : "") + std::to_string(new_size[i]);
  }
  if (static_cast<int64_t>(p.size()) != total)
    fail(who, ": sample_positions must hold one position per output of every axis, outermost first: ", sum,
         new_size.size() > 1 ? " = " + std::to_string(total) : std::string(), " values for new_size ",
         fmt_sizes(new_size), ", got ", static_cast<long>(p.size()));
  size_t k = 0;
  for (size_t i = 0; i < new_size.size(); i++)
    for (int64_t o = 0; o < new_size[i]; o++, k++) {
      const double v = p[k];
      if (!(v >= -static_cast<double>(VITPE_MAX_AXIS) && v <= static_cast<double>(VITPE_MAX_AXIS)))
        fail(who, ": sample_positions must be finite and within +-", static_cast<long>(VITPE_MAX_AXIS),
             ", got ", piece(v), " at output ", o, " of ", axis_names[i]);
      if (o > 0 && v < p[k - 1])
        fail(who, ": sample_positions must not decrease along an axis: ", axis_names[i], " has ", piece(v),
             " at output ", o, " after ", piece(p[k - 1]));
    }
  return p;
}

// Validates the op's arguments against a table of `tokens` tokens and builds
// the per-axis descriptions. `who` names the op in messages.
Resize describe(const char* who, const char* table_arg, int64_t tokens, ScalarType dtype,
                const std::vector<int64_t>& new_size,
                const std::optional<std::vector<int64_t>>& old_size, int64_t num_prefix_tokens,
                const std::string& mode_name, std::optional<bool> align_corners, bool antialias,
                const std::optional<std::vector<double>>& scale_factor, int64_t num_suffix_tokens,
                const std::optional<std::vector<double>>& sample_positions) {
  Resize r;
  r.dtype = parse_dtype(dtype, table_arg);
  if (tokens < 0) fail(who, ": input_tokens must be >= 0, got ", tokens);
  if (num_prefix_tokens < 0 || num_prefix_tokens > tokens)
    fail(who, ": num_prefix_tokens must be in [0, ", tokens, "] (the table has ", tokens,
         " tokens), got ", num_prefix_tokens);
  if (num_suffix_tokens < 0 || num_suffix_tokens > tokens - num_prefix_tokens)
    fail(who, ": num_suffix_tokens must be in [0, ", tokens - num_prefix_tokens, "] (the table has ", tokens,
         " tokens, ", num_prefix_tokens, " of them prefix), got ", num_suffix_tokens);
  r.prefix = num_prefix_tokens;
  r.suffix = num_suffix_tokens;
  const int64_t grid_tokens = tokens - num_prefix_tokens - num_suffix_tokens;
  // "(T tokens - P prefix = G)", the suffix named where there is one
  const std::string token_sum = std::to_string(tokens) + " tokens - " + std::to_string(num_prefix_tokens) +
                                " prefix" +
                                (num_suffix_tokens ? " - " + std::to_string(num_suffix_tokens) + " suffix" : "");

  const size_t n_axes = new_size.size();
  bool positive = n_axes >= 1 && n_axes <= VITPE_MAX_RANK;
  for (int64_t v : new_size) positive = positive && v >= 1;
  if (!positive)
    fail(who, ": new_size must be 1, 2 or 3 positive ints (the new grid: (length), (height, width) or "
         "(time, height, width)), got ", fmt_sizes(new_size));
  const int rank = static_cast<int>(n_axes);
  r.rank = rank;
  const int mode = parse_mode(mode_name, rank);

  std::vector<int64_t> in(n_axes);
  if (old_size.has_value()) {
    const auto& o = *old_size;
    if (o.size() != n_axes)
      fail(who, ": old_size has ", static_cast<long>(o.size()), " values but new_size has ",
           static_cast<long>(n_axes), ": both give one side per axis of the same grid ((length), "
           "(height, width) or (time, height, width)), got old_size ", fmt_sizes(o), " and new_size ",
           fmt_sizes(new_size));
    for (int64_t v : o)
      if (v < 1) fail(who, ": old_size must be positive ints ", axes_names(rank), ", got ", fmt_sizes(o));
    int64_t n = 1;
    bool wraps = false;
    for (int64_t v : o) wraps = wraps || mul_overflows(n, v, &n);
    if (wraps || n != grid_tokens)
      fail(who, ": old_size ", fmt_sizes(o), " has ", fmt_product(o), " grid tokens but the table has ",
           token_sum, " = ", grid_tokens);
    in = o;
  } else if (rank == 1) {
    if (grid_tokens == 0)
      fail(who, ": the table has no grid tokens (", token_sum, ")");
    in[0] = grid_tokens;
  } else if (rank == 2) {
    const int64_t side = isqrt(grid_tokens);
    if (grid_tokens == 0 || side * side != grid_tokens)
      fail(who, ": cannot infer a square grid from ", grid_tokens, " grid tokens (", token_sum,
           "); pass old_size=(height, width)");
    in[0] = in[1] = side;
  } else {
    const int64_t side = icbrt(grid_tokens);
    if (grid_tokens == 0 || side * side * side != grid_tokens)
      fail(who, ": cannot infer a cubic grid from ", grid_tokens, " grid tokens (", token_sum,
           "); pass old_size=(time, height, width)");
    in[0] = in[1] = in[2] = side;
  }

  const vitpe_mode_info info = mode_info(mode);
  const bool ac = align_corners.value_or(false);
  if (ac && !info.align_corners)
    fail(who, ": align_corners=True is only valid for ",
         mode_names([](const vitpe_mode_info& i) { return i.align_corners != 0; }), ", not mode '",
         mode_name, "' (as F.interpolate)");
  if (antialias && info.antialias == VITPE_ANTIALIAS_NEVER) {
    const std::string always =
        mode_names([](const vitpe_mode_info& i) { return i.antialias == VITPE_ANTIALIAS_ALWAYS; });
    fail(who, ": antialias=True is only valid for ",
         mode_names([](const vitpe_mode_info& i) { return i.antialias == VITPE_ANTIALIAS_OPTIONAL; }),
         always.empty() ? std::string() : " (" + always + " always antialiases)", ", not mode '", mode_name, "'");
  }

  std::vector<double> sf(n_axes, 0.0);
  if (scale_factor.has_value() && !info.scale_factor)
    fail(who, ": scale_factor is not accepted by mode '", mode_name, "'; pass new_size alone");
  if (scale_factor.has_value()) {
    const auto& s = *scale_factor;
    std::string given = "(";
    for (size_t i = 0; i < s.size(); i++) given += (i ? ", " : "") + piece(s[i]);
    given += ")";
    if (s.size() != n_axes)
      fail(who, ": scale_factor must be ", static_cast<long>(n_axes), n_axes == 1 ? " float " : " floats ",
           axes_names(rank), ", one per axis of new_size, got ", static_cast<long>(s.size()), " values");
    for (size_t i = 0; i < n_axes; i++)
      if (!(s[i] > 0.0) || !std::isfinite(s[i]))
        fail(who, ": scale_factor must be positive and finite, got ", given);
    for (size_t i = 0; i < n_axes; i++) {
      // F.interpolate(scale_factor=s) makes floor(in * s) outputs, computed in
      // double; compared as doubles, since a huge scale does not fit int64.
      const double implied = std::floor(static_cast<double>(in[i]) * s[i]);
      if (implied != static_cast<double>(new_size[i]) || implied >= 0x1p62) {
        std::string floors = "(";
        for (size_t j = 0; j < n_axes; j++)
          floors += (j ? ", " : "") + integral(std::floor(static_cast<double>(in[j]) * s[j]));
        fail(who, ": scale_factor ", given, " on grid ", fmt_sizes(in), " gives floor(in * scale) = ", floors,
             ") but new_size is ", fmt_sizes(new_size));
      }
      sf[i] = s[i];
    }
  }

  for (size_t i = 0; i < n_axes; i++)
    if (in[i] > VITPE_MAX_AXIS || new_size[i] > VITPE_MAX_AXIS)
      fail(who, ": grid sides are limited to ", static_cast<long>(VITPE_MAX_AXIS),
           " tokens (float index math loses exactness beyond), got old grid ", fmt_sizes(in), " and new_size ",
           fmt_sizes(new_size));
  const int opmath_double = r.dtype == VITPE_F64;
  static const char* const axis_names[3][3] = {
      {"the length axis", "", ""}, {"the height axis", "the width axis", ""},
      {"the time axis", "the height axis", "the width axis"}};
  if (sample_positions.has_value())
    r.positions = std::make_shared<const std::vector<double>>(
        checked_positions(who, *sample_positions, new_size, mode, mode_name, ac, antialias,
                          scale_factor.has_value(), axis_names[rank - 1]));
  for (int i = 0, first = 0; i < rank; first += static_cast<int>(new_size[i]), i++) {
    r.axes[i] = vitpe_axis{in[i], new_size[i], mode, ac, antialias, opmath_double, sf[i], nullptr};
    if (r.positions) r.axes[i].positions = r.positions->data() + first;
    check_status(vitpe_axis_check(&r.axes[i]), (std::string("checking ") + axis_names[rank - 1][i]).c_str());
  }
  return r;
}

int64_t element_bytes(int dtype) { return dtype == VITPE_F64 ? 8 : dtype == VITPE_F32 ? 4 : 2; }

const char* vitpe_dtype_name(int dtype) {
  return dtype == VITPE_F64 ? "float64" : dtype == VITPE_F32 ? "float32"
       : dtype == VITPE_F16 ? "float16" : "bfloat16";
}

std::string fmt_bytes(double bytes) {
  static const char* units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = 0;
  while (bytes >= 1024.0 && u < 6) bytes /= 1024.0, u++;
  char buf[64];
  std::snprintf(buf, sizeof(buf), u ? "%.1f %s" : "%.0f %s", bytes, units[u]);
  return buf;
}

// All the memory of the device a table lives on: an output larger than that
// can never be allocated, so it is refused before the allocator is asked
// (which would fail deep inside torch, with a C++ backtrace in the message).
// 0 where nothing is allocated (meta tensors) or the size is unknown.
uint64_t device_memory_bytes(const torch::stable::Device& device) {
  if (device.is_cpu()) {
    // Read once: sysconf(_SC_PHYS_PAGES) is a system call, and RAM does not
    // change under a running process.
    static const uint64_t ram = [] {
      const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
      return pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) : 0;
    }();
    return ram;
  }
  size_t bytes = 0;
  if (device.is_cuda() && cuda_device_memory &&
      cuda_device_memory(&bytes, device.has_index() ? device.index() : 0) == VITPE_OK)
    return bytes;
  return 0;
}

// Checks that a (batch, prefix + h*w, channels) result can exist on `device`
// and returns its token count. `what` names the argument that set h, w.
int64_t checked_output_tokens(const char* who, const std::string& what, const torch::stable::Device& device,
                              int64_t batch, int64_t prefix, const std::vector<int64_t>& grid_sides,
                              int64_t suffix, int64_t channels, int dtype) {
  const std::string shape = std::to_string(batch) + " x (" + std::to_string(prefix) + " + " +
                            fmt_product(grid_sides) + (suffix ? " + " + std::to_string(suffix) : "") + ") x " +
                            std::to_string(channels) + " " + vitpe_dtype_name(dtype);
  int64_t grid = 1, tokens, rows, elems, bytes;
  bool wraps = false;
  for (int64_t side : grid_sides) wraps = wraps || mul_overflows(grid, side, &grid);
  if (wraps || __builtin_add_overflow(grid, prefix, &tokens) || __builtin_add_overflow(tokens, suffix, &tokens) ||
      mul_overflows(batch, tokens, &rows) || mul_overflows(rows, channels, &elems) ||
      mul_overflows(elems, element_bytes(dtype), &bytes))
    fail(who, ": ", what, " makes an output of ", shape, " elements, too large to allocate (over 2^63 bytes)");
  const uint64_t memory = device_memory_bytes(device);
  if (memory > 0 && static_cast<uint64_t>(bytes) > memory)
    fail(who, ": ", what, " makes an output of ", shape, " = ", bytes, " bytes (",
         fmt_bytes(static_cast<double>(bytes)), "), too large to allocate: more than the ",
         fmt_bytes(static_cast<double>(memory)), " of memory of the ", device.is_cpu() ? "CPU" : "device");
  return tokens;
}

std::string first_line(const char* text) {
  std::string s(text ? text : "");
  const size_t end = s.find('\n');
  return end == std::string::npos ? s : s.substr(0, end);
}

bool same_axis(const vitpe_axis& a, const vitpe_axis& b) {
  if (!(a.in_size == b.in_size && a.out_size == b.out_size && a.mode == b.mode &&
        a.align_corners == b.align_corners && a.antialias == b.antialias &&
        a.opmath_double == b.opmath_double && a.scale_factor == b.scale_factor))
    return false;
  if (!a.positions || !b.positions) return !a.positions && !b.positions;
  return std::memcmp(a.positions, b.positions, static_cast<size_t>(a.out_size) * sizeof(double)) == 0;
}

// A plan for r's axes: same rank, same axes (the 1 -> 1 axes of a lower
// rank follow from the rank).
bool plan_for(const vitpe_plan* p, const Resize& r) {
  if (p->rank != r.rank) return false;
  const vitpe_axis* axes[3] = {&p->t, &p->h, &p->w};
  for (int i = 0; i < r.rank; i++)
    if (!same_axis(*axes[3 - r.rank + i], r.axes[i])) return false;
  return true;
}

// The plan of a resize, from a small cache of recent ones. Plans are
// immutable once built and a training loop resizes to the same few grids
// every step, so a hit skips the tap math (2-8 us a call on this host, and
// every backward's adjoint tables). A plan with adjoint tables also serves
// the forward. Entries are shared: a plan stays alive while a call uses it.
// The cache is bounded by count and by bytes: tables grow with the grid (and
// with the filter's width when shrinking), and a few plans for huge grids
// must not pin hundreds of MB; a plan over the byte budget is not kept.
constexpr size_t kPlanCacheEntries = 16;
constexpr size_t kPlanCacheBytes = size_t(32) << 20;

// What a cached plan holds: its tables and its copy of any sample positions.
size_t plan_bytes(const vitpe_plan* p) {
  size_t bytes = p->layout.bytes;
  for (const vitpe_axis* ax : {&p->t, &p->h, &p->w})
    if (ax->positions) bytes += static_cast<size_t>(ax->out_size) * sizeof(double);
  return bytes;
}

std::shared_ptr<const vitpe_plan> get_plan(const Resize& r, bool adjoint) {
  static std::mutex mutex;
  static std::vector<std::shared_ptr<const vitpe_plan>> recent;  // most recently used first
  static size_t cached_bytes = 0;
  {
    std::lock_guard<std::mutex> lock(mutex);
    for (size_t i = 0; i < recent.size(); i++) {
      const vitpe_plan* p = recent[i].get();
      if (plan_for(p, r) && (p->layout.with_adjoint || !adjoint)) {
        std::rotate(recent.begin(), recent.begin() + i, recent.begin() + i + 1);
        return recent.front();
      }
    }
  }
  vitpe_plan* raw = nullptr;  // built outside the lock: a miss does not stall other threads
  check_status(vitpe_plan_create_nd(&raw, r.rank, r.axes, adjoint ? 1 : 0), "planning the resize");
  std::shared_ptr<const vitpe_plan> plan(raw, [](const vitpe_plan* p) {
    vitpe_plan_destroy(const_cast<vitpe_plan*>(p));
  });
  const size_t bytes = plan_bytes(plan.get());
  if (bytes > kPlanCacheBytes) return plan;
  std::lock_guard<std::mutex> lock(mutex);
  recent.insert(recent.begin(), plan);
  cached_bytes += bytes;
  while (recent.size() > kPlanCacheEntries || cached_bytes > kPlanCacheBytes) {
    cached_bytes -= plan_bytes(recent.back().get());
    recent.pop_back();
  }
  return plan;
}

// A new contiguous tensor of `sizes` on like's device, of like's dtype unless
// `dtype` is given (an aoti_torch_dtype_* code). aoti_torch_empty_strided
// calls at::empty_strided directly, and reports an allocator failure as an
// error code; torch::stable::new_empty (as the 2.10+ headers define it) goes
// through the boxed dispatcher by the op's name (a schema lookup and boxing
// on every call) and on torch 2.11 ends the process when CUDA memory runs out.
Tensor new_tensor(const Tensor& like, const std::vector<int64_t>& sizes, std::optional<int32_t> dtype = std::nullopt) {
  int32_t code = dtype.value_or(0), device_type = 0, device_index = 0;
  if ((!dtype && aoti_torch_get_dtype(like.get(), &code) != AOTI_TORCH_SUCCESS) ||
      aoti_torch_get_device_type(like.get(), &device_type) != AOTI_TORCH_SUCCESS ||
      aoti_torch_get_device_index(like.get(), &device_index) != AOTI_TORCH_SUCCESS)
    throw std::runtime_error("could not read the tensor's dtype and device");
  std::vector<int64_t> strides(sizes.size(), 1);
  for (size_t d = sizes.size(); d-- > 1;) strides[d - 1] = strides[d] * std::max<int64_t>(sizes[d], 1);
  AtenTensorHandle handle = nullptr;
  if (aoti_torch_empty_strided(static_cast<int64_t>(sizes.size()), sizes.data(), strides.data(), code,
                               device_type, device_index, &handle) != AOTI_TORCH_SUCCESS ||
      handle == nullptr)
    throw std::runtime_error("out of memory");
  return Tensor(handle);
}

// The kernels' view of the two tables: src is read, dst written.
vitpe_io describe_io(const Resize& r, const Tensor& src, const Tensor& dst) {
  vitpe_io io{};
  io.dtype = r.dtype;
  io.batch = src.size(0);
  io.prefix = r.prefix;
  io.suffix = r.suffix;
  io.channels = src.size(2);
  io.in_batch_stride = src.stride(0);
  io.in_token_stride = src.stride(1);
  io.out_batch_stride = dst.stride(0);
  io.out_token_stride = dst.stride(1);
  return io;
}

// Runs forward (backward=false) or backward over CPU tensors on torch's pool:
// each stage of the run (one; two where a grid of rank 3 is resized along T
// and in H or W) as one parallel_for over its rows.
void run_cpu(const Resize& r, const Tensor& src, Tensor& dst, bool backward) {
  const std::shared_ptr<const vitpe_plan> plan = get_plan(r, backward);
  const vitpe_io io = describe_io(r, src, dst);

  vitpe_stages stages{};
  size_t scratch_bytes = 0;
  check_status(vitpe_cpu_stages(&stages, plan.get(), &io, backward), "planning the passes");
  check_status(vitpe_scratch_bytes(&scratch_bytes, plan.get(), &io, backward), "sizing scratch");
  const size_t slot = (scratch_bytes + 63) & ~static_cast<size_t>(63);
  const size_t workspace = (stages.workspace_bytes + 63) & ~static_cast<size_t>(63);
  // Small tables stay on one thread: a pool hand-off costs more than they do.
  const int64_t work = io.batch * r.grid(!backward) * io.channels;
  int64_t chunks = std::max<int64_t>(stages.rows[0], stages.rows[1]);
  chunks = std::min<int64_t>(torch::stable::get_num_threads(), chunks);
  if (work < (int64_t(1) << 16)) chunks = 1;
  chunks = std::max<int64_t>(chunks, 1);

  // one buffer: the stages' workspace, then a scratch slot per chunk
  Tensor buffer = new_tensor(src, {static_cast<int64_t>(workspace) + chunks * static_cast<int64_t>(slot)},
                             aoti_torch_dtype_uint8());
  auto* base = static_cast<char*>(buffer.mutable_data_ptr());
  void* ws = stages.workspace_bytes ? base : nullptr;
  const void* in = src.const_data_ptr();
  void* out = dst.mutable_data_ptr();
  std::atomic<int> status{VITPE_OK};
  for (int stage = 0; stage < stages.count && status.load() == VITPE_OK; stage++) {
    const int64_t rows = stages.rows[stage];
    const int64_t parts = std::min<int64_t>(chunks, std::max<int64_t>(rows, 1));
    // Chunk k owns rows [k*rows/parts, (k+1)*rows/parts) and scratch slot k;
    // row results do not depend on the split, so 1 and N threads agree bitwise.
    torch::stable::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; k++) {
        const int64_t lo = k * rows / parts, hi = (k + 1) * rows / parts;
        void* scratch = base + workspace + k * static_cast<int64_t>(slot);
        int st = backward ? vitpe_backward_cpu_stage(out, in, plan.get(), &io, stage, lo, hi, ws, scratch)
                          : vitpe_forward_cpu_stage(out, in, plan.get(), &io, stage, lo, hi, ws, scratch);
        if (st != VITPE_OK) status.store(st);
      }
    });
  }
  check_status(status.load(), backward ? "the backward pass" : "the forward pass");
}

#ifdef VITPE_WITH_CUDA
void run_cuda(const Resize& r, const Tensor& src, Tensor& dst, bool backward) {
  torch::stable::accelerator::DeviceGuard guard(src.get_device_index());
  void* stream = nullptr;
  if (aoti_torch_get_current_cuda_stream(src.get_device_index(), &stream) != 0)
    throw std::runtime_error("vitpe: could not get the current CUDA stream");
  const std::shared_ptr<const vitpe_plan> plan = get_plan(r, backward);
  const vitpe_io io = describe_io(r, src, dst);
  // Common resizes carry their tables inside the kernel launch; others get a
  // device workspace the tables are rebuilt in, in stream order (so both
  // ways can be captured in a CUDA graph).
  size_t workspace_bytes = 0;
  check_status(vitpe_cuda_workspace_bytes(&workspace_bytes, plan.get(), &io, backward),
               "planning the resize");
  std::optional<Tensor> workspace;
  if (workspace_bytes > 0)
    workspace = new_tensor(src, {static_cast<int64_t>(workspace_bytes)}, aoti_torch_dtype_uint8());
  void* ws = workspace ? workspace->mutable_data_ptr() : nullptr;
  int st = backward ? vitpe_backward_cuda(dst.mutable_data_ptr(), src.const_data_ptr(), plan.get(),
                                          &io, ws, stream)
                    : vitpe_forward_cuda(dst.mutable_data_ptr(), src.const_data_ptr(), plan.get(),
                                         &io, ws, stream);
  if (st == VITPE_ECUDA) {
    char why[512];
    vitpe_cuda_diagnose(why, sizeof(why), src.get_device_index());
    if (why[0])
      throw std::runtime_error(std::string("vitpe: the CUDA ") + (backward ? "backward" : "forward") +
                               " pass cannot run: " + why);
  }
  check_status(st, backward ? "the CUDA backward pass" : "the CUDA forward pass");
}
#endif

// One call of either op, checked: every rule an argument must follow is
// applied here, for the kernels and for the fake kernels of torch.compile and
// torch.export (which reach it through vitpe::check_call with the sizes they
// trace). backward: the call is interpolate_pos_embed_backward, `shape` is
// grad_output's and `input_tokens` the forward input's token count.
struct Call {
  Resize r;
  int64_t out_tokens = 0;
};

Call check_call(bool backward, const std::vector<int64_t>& shape, ScalarType dtype,
                const torch::stable::Device& device, int64_t input_tokens,
                const std::vector<int64_t>& new_size, const std::optional<std::vector<int64_t>>& old_size,
                int64_t num_prefix_tokens, const std::string& mode, std::optional<bool> align_corners,
                bool antialias, const std::optional<std::vector<double>>& scale_factor,
                int64_t num_suffix_tokens, const std::optional<std::vector<double>>& sample_positions) {
  const char* who = backward ? "interpolate_pos_embed_backward" : "interpolate_pos_embed";
  const char* table_arg = backward ? "grad_output" : "pos_embed";
  if (shape.size() != 3)
    fail(who, ": ", table_arg, " must be 3-D (batch, prefix + grid + suffix tokens, channels), got a ",
         static_cast<long>(shape.size()), "-D tensor");
  const int64_t tokens = backward ? input_tokens : shape[1];
  // The backward op describes the forward resize from its input's token
  // count, exactly as the forward op did (old_size may again be inferred).
  Call c;
  c.r = describe(who, table_arg, tokens, dtype, new_size, old_size, num_prefix_tokens, mode,
                 align_corners, antialias, scale_factor, num_suffix_tokens, sample_positions);
  const Resize& r = c.r;
  if (backward) {
    // Checked like the forward's output: three sides of up to 2^24 can wrap
    // int64, and a wrapped count could match a short grad_output.
    const int64_t expected = checked_output_tokens(who, "new_size " + fmt_sizes(new_size), device, shape[0],
                                                   r.prefix, r.sizes(true), r.suffix, shape[2], r.dtype);
    if (shape[1] != expected)
      fail(who, ": grad_output has ", shape[1], " tokens, expected ", r.prefix, " + ", fmt_product(r.sizes(true)),
           r.suffix ? " + " + std::to_string(r.suffix) : std::string(), " = ", expected);
    c.out_tokens = checked_output_tokens(who, "input_tokens " + std::to_string(input_tokens), device,
                                         shape[0], r.prefix, r.sizes(false), r.suffix, shape[2], r.dtype);
  } else {
    c.out_tokens = checked_output_tokens(who, "new_size " + fmt_sizes(new_size), device, shape[0],
                                         r.prefix, r.sizes(true), r.suffix, shape[2], r.dtype);
  }
  return c;
}

std::vector<int64_t> shape_of(const char* who, const char* arg, const Tensor& t) {
  if (t.layout() != torch::headeronly::Layout::Strided)
    fail(who, ": ", arg, " must be a dense strided tensor (not sparse, mkldnn or nested)");
  std::vector<int64_t> shape(static_cast<size_t>(t.dim()));
  for (int64_t d = 0; d < t.dim(); d++) shape[static_cast<size_t>(d)] = t.size(d);
  return shape;
}

// Allocates the result of a checked call and runs the kernels. Forward maps
// the (hin, win) grid of src to (hout, wout); backward maps a gradient on the
// (hout, wout) grid back to (hin, win).
Tensor resize_table(const char* who, const Tensor& src_in, const Call& c, bool backward) {
  const int64_t batch = src_in.size(0), channels = src_in.size(2);
  Tensor dst;
  try {
    dst = new_tensor(src_in, {batch, c.out_tokens, channels});
  } catch (const std::exception& e) {
    const double bytes = static_cast<double>(batch) * static_cast<double>(c.out_tokens) *
                         static_cast<double>(channels) * static_cast<double>(element_bytes(c.r.dtype));
    throw std::runtime_error(std::string(who) + ": could not allocate the output of " +
                             std::to_string(batch) + " x " + std::to_string(c.out_tokens) + " x " +
                             std::to_string(channels) + " elements (" + fmt_bytes(bytes) + "): " +
                             first_line(e.what()));
  }
  if (batch == 0 || channels == 0) return dst;
  // The kernels take any batch/token strides but read channels contiguously.
  Tensor src = (src_in.stride(2) == 1 || channels == 1) ? src_in : torch::stable::contiguous(src_in);
  if (src.is_cpu()) {
    run_cpu(c.r, src, dst, backward);
  } else if (src.is_cuda()) {
#ifdef VITPE_WITH_CUDA
    run_cuda(c.r, src, dst, backward);
#else
    // Not reached: _C registers no CUDA kernel (vitpe_ext/op/backends.py
    // registers the message for a process without the CUDA module).
    fail(who, ": vitpe_ext._C has no CUDA kernels; they are in vitpe_ext._C_cuda");
#endif
  } else {
    fail(who, ": tensors must be on the CPU or a CUDA device");
  }
  return dst;
}

Tensor interpolate_pos_embed(Tensor pos_embed, std::vector<int64_t> new_size,
                             std::optional<std::vector<int64_t>> old_size, int64_t num_prefix_tokens,
                             std::string mode, std::optional<bool> align_corners, bool antialias,
                             std::optional<std::vector<double>> scale_factor, int64_t num_suffix_tokens,
                             std::optional<std::vector<double>> sample_positions) {
  const char* who = "interpolate_pos_embed";
  const Call c = check_call(false, shape_of(who, "pos_embed", pos_embed), pos_embed.scalar_type(),
                            pos_embed.device(), 0, new_size, old_size, num_prefix_tokens, mode,
                            align_corners, antialias, scale_factor, num_suffix_tokens, sample_positions);
  return resize_table(who, pos_embed, c, /*backward=*/false);
}

Tensor interpolate_pos_embed_backward(Tensor grad_output, int64_t input_tokens,
                                      std::vector<int64_t> new_size,
                                      std::optional<std::vector<int64_t>> old_size,
                                      int64_t num_prefix_tokens, std::string mode,
                                      std::optional<bool> align_corners, bool antialias,
                                      std::optional<std::vector<double>> scale_factor,
                                      int64_t num_suffix_tokens,
                                      std::optional<std::vector<double>> sample_positions) {
  const char* who = "interpolate_pos_embed_backward";
  const Call c = check_call(true, shape_of(who, "grad_output", grad_output), grad_output.scalar_type(),
                            grad_output.device(), input_tokens, new_size, old_size, num_prefix_tokens,
                            mode, align_corners, antialias, scale_factor, num_suffix_tokens, sample_positions);
  return resize_table(who, grad_output, c, /*backward=*/true);
}

#ifndef VITPE_CUDA_MODULE  // registered by _C alone
// The ops' validation alone, for callers that hold sizes, not tensors: the
// fake kernels (torch.compile, torch.export) and a dry run. Raises exactly
// what the op would raise for a table of that shape, dtype and device.
void check_call_op(std::vector<int64_t> shape, ScalarType dtype, torch::stable::Device device,
                   std::optional<int64_t> input_tokens, std::vector<int64_t> new_size,
                   std::optional<std::vector<int64_t>> old_size, int64_t num_prefix_tokens,
                   std::string mode, std::optional<bool> align_corners, bool antialias,
                   std::optional<std::vector<double>> scale_factor, int64_t num_suffix_tokens,
                   std::optional<std::vector<double>> sample_positions) {
  check_call(input_tokens.has_value(), shape, dtype, device, input_tokens.value_or(0), new_size,
             old_size, num_prefix_tokens, mode, align_corners, antialias, scale_factor, num_suffix_tokens,
             sample_positions);
}
#endif

}  // namespace

#ifndef VITPE_CUDA_MODULE
// The schemas' default mode is the table's (vitpe_modes.h).
static const char* schema(const char* head, const char* tail) {
  static std::vector<std::unique_ptr<std::string>> kept;  // def() may hold on to the text
  kept.push_back(std::make_unique<std::string>(std::string(head) + "str mode=\"" +
                                               vitpe_mode_name(VITPE_MODE_DEFAULT) + "\", " + tail));
  return kept.back()->c_str();
}

// Sizes are lists of 1, 2 or 3 ints, a grid of that rank ((W), (H, W) or
// (T, H, W)); num_suffix_tokens and sample_positions come last, so calls
// written for the 2-D op keep their meaning.
STABLE_TORCH_LIBRARY(vitpe, m) {
  m.def(schema("interpolate_pos_embed(Tensor pos_embed, SymInt[] new_size, SymInt[]? old_size=None, "
               "int num_prefix_tokens=1, ",
               "bool? align_corners=None, bool antialias=False, float[]? scale_factor=None, "
               "int num_suffix_tokens=0, float[]? sample_positions=None) -> Tensor"));
  m.def(schema("interpolate_pos_embed_backward(Tensor grad_output, SymInt input_tokens, SymInt[] new_size, "
               "SymInt[]? old_size=None, int num_prefix_tokens=1, ",
               "bool? align_corners=None, bool antialias=False, float[]? scale_factor=None, "
               "int num_suffix_tokens=0, float[]? sample_positions=None) -> Tensor"));
  m.def(schema("check_call(int[] shape, ScalarType dtype, Device device, int? input_tokens, int[] new_size, "
               "int[]? old_size=None, int num_prefix_tokens=1, ",
               "bool? align_corners=None, bool antialias=False, float[]? scale_factor=None, "
               "int num_suffix_tokens=0, float[]? sample_positions=None) -> ()"));
}

// No tensor arguments: one kernel for every device.
STABLE_TORCH_LIBRARY_IMPL(vitpe, CompositeExplicitAutograd, m) {
  m.impl("check_call", TORCH_BOX(&check_call_op));
}

STABLE_TORCH_LIBRARY_IMPL(vitpe, CPU, m) {
  m.impl("interpolate_pos_embed", TORCH_BOX(&interpolate_pos_embed));
  m.impl("interpolate_pos_embed_backward", TORCH_BOX(&interpolate_pos_embed_backward));
}

#else
// Only in vitpe_ext._C_cuda. Without it, vitpe_ext/op/backends.py registers
// a CUDA kernel that says how to get these.
STABLE_TORCH_LIBRARY_IMPL(vitpe, CUDA, m) {
  m.impl("interpolate_pos_embed", TORCH_BOX(&interpolate_pos_embed));
  m.impl("interpolate_pos_embed_backward", TORCH_BOX(&interpolate_pos_embed_backward));
}
#endif
