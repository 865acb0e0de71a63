/* vitpe_modes.h — the one table of resize modes. Included by vitpe.h.
 *
 * Every fact about a mode lives in its row: its name, how it picks taps, the
 * filter it antialiases with and that filter's support, which of
 * F.interpolate's options it accepts, and whether an axis of unchanged size
 * is a plain copy. The enum, the names, the argument checks, the tap formulas
 * (host and device), the shim's messages and Python's view of the modes
 * (vitpe_ext.op.modes) are all generated from it.
 *
 * Adding a mode that is a filter (Gaussian, Mitchell, ...): write its filter
 * function in vitpe_taps.h (the "Filters" section; distance in, weight out)
 * and add one row here with taps FILTER, antialias ALWAYS and same_size
 * ALWAYS (as ATen's antialiased kernels, an unchanged axis is copied, not
 * filtered). Nothing else in C, the shim or Python needs to change: the C
 * suite, the op's checks, the command and the tests iterate over the table
 * (tests/test_mode_table.py adds a Gaussian this way and checks it).
 *
 * Columns of X(id, name, taps, filter, support, align_corners, antialias,
 *               scale_factor, same_size):
 *   id            enum suffix: VITPE_MODE_<id>
 *   name          the mode string users pass (F.interpolate's where it has one)
 *   taps          how outputs pick inputs when the mode does not antialias:
 *                   NEAREST        ATen's nearest: floor(o * scale)
 *                   NEAREST_EXACT  ATen's nearest-exact: floor((o + 0.5) * scale)
 *                   AREA           adaptive average pooling windows
 *                   LINEAR         ATen's 2-tap linear interpolation
 *                   CUBIC          ATen's 4-tap Keys cubic (a = -0.75), edge-clamped
 *                   FILTER         Pillow's window of `filter`, widened when shrinking
 *   filter        the antialiasing filter (weight of a distance >= 0), used
 *                 when taps is FILTER or the user asks for antialias
 *   support       the filter's half-width, in input samples at scale 1
 *   align_corners 1: accepts align_corners=True
 *   antialias     NEVER (refused), OPTIONAL (off unless asked), ALWAYS
 *                 (accepted either way; the mode always antialiases)
 *   scale_factor  1: accepts a scale_factor for its coordinate mapping
 *   same_size     an axis whose size does not change is a copy: ALWAYS,
 *                 NEVER, or only WITH_ANTIALIAS (where ATen's kernels skip it)
 */
#ifndef VITPE_MODES_H
#define VITPE_MODES_H

#define VITPE_MODE_TABLE(X)                                                                          \
    X(NEAREST,       "nearest",       NEAREST,       vitpe__filter_none,     0.0, 0, NEVER,    1, ALWAYS) \
    X(NEAREST_EXACT, "nearest-exact", NEAREST_EXACT, vitpe__filter_none,     0.0, 0, NEVER,    1, NEVER)  \
    X(BILINEAR,      "bilinear",      LINEAR,        vitpe__filter_triangle, 1.0, 1, OPTIONAL, 1, ALWAYS) \
    X(BICUBIC,       "bicubic",       CUBIC,         vitpe__filter_keys_aa,  2.0, 1, OPTIONAL, 1, WITH_ANTIALIAS) \
    X(AREA,          "area",          AREA,          vitpe__filter_none,     0.0, 0, NEVER,    1, NEVER)  \
    X(LANCZOS3,      "lanczos3",      FILTER,        vitpe__filter_lanczos3, 3.0, 0, ALWAYS,   1, ALWAYS)

/* F.interpolate's own names of a mode on grids of one rank, accepted at that
 * rank only: X(alias, rank, id). A table name means its filter along every
 * axis at any rank ("bilinear": linear along each axis of a 1-D or 3-D grid
 * too); these let F.interpolate's names for 1-D and 3-D data pass as well. */
#define VITPE_MODE_ALIASES(X)      \
    X("linear", 1, BILINEAR)       \
    X("trilinear", 3, BILINEAR)

/* The mode of F.interpolate-style calls that name none (torchvision's and
 * timm's resize both use bicubic). */
#define VITPE_MODE_DEFAULT VITPE_MODE_BICUBIC

#define VITPE__MODE_ENUM(id, ...) VITPE_MODE_##id,
typedef enum vitpe_mode { VITPE_MODE_TABLE(VITPE__MODE_ENUM) VITPE_MODE_COUNT } vitpe_mode;
#undef VITPE__MODE_ENUM

typedef enum vitpe_taps_kind {
    VITPE_TAPS_NEAREST,
    VITPE_TAPS_NEAREST_EXACT,
    VITPE_TAPS_AREA,
    VITPE_TAPS_LINEAR,
    VITPE_TAPS_CUBIC,
    VITPE_TAPS_FILTER
} vitpe_taps_kind;

typedef enum vitpe_antialias {
    VITPE_ANTIALIAS_NEVER = 0,
    VITPE_ANTIALIAS_OPTIONAL = 1,
    VITPE_ANTIALIAS_ALWAYS = 2
} vitpe_antialias;

typedef enum vitpe_same_size {
    VITPE_SAME_SIZE_NEVER = 0,
    VITPE_SAME_SIZE_ALWAYS = 1,
    VITPE_SAME_SIZE_WITH_ANTIALIAS = 2
} vitpe_same_size;

#endif /* VITPE_MODES_H */
