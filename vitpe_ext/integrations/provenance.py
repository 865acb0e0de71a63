"""How a position table was made: the record `vitpe resize` keeps beside it.

A resized table carries the interpolation that made it. Resizing it again, or
at run time for other resolutions (make_dynamic), with different settings
(bilinear on a table made with bicubic + antialias, another prefix count)
gives the model a table it never saw, and accuracy drops with no error (the
article's §5, problem 1). The record lets later steps see the mismatch.

One record per table (Provenance): the chain of resizes (ResizeStep) from the
table's original grid. Resizing a resized table appends a step, so the
source grid stays known and the whole history is kept; the settings a new
resize is compared with are the last step's (what made the table as it is).

Where the record lives (RECORD_KEY = "vitpe:provenance"):

- torch files: in the `_metadata` of the state dict that holds the table,
  the attribute torch keeps beside a state dict's keys (module versions) and
  that torch.save / torch.load(weights_only=True) carry. It adds no key, so
  `model.load_state_dict(torch.load(f), strict=True)` works on a bare state
  dict as before, and `{"model": sd, ...}` checkpoints keep it on sd, the
  part users pass to load_state_dict. The value is a plain dict:
  {"format": 1, "tables": {table key: {"steps": [step dict, ...]}}}. Code
  that rebuilds the dict ({k: v for ...}, model.state_dict()) drops it;
  nothing then warns.
- safetensors: the same dict as a JSON string in the header's `__metadata__`
  under RECORD_KEY.

    records = read_provenance(torch.load(f, weights_only=True))   # {table key: Provenance}
    rec = records.get("pos_embed")
    if rec: print(rec.source_grid, rec.grid, rec.last.label)
"""
from __future__ import annotations

import json
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..op import resolve

__all__ = ["RECORD_KEY", "ProvenanceWarning", "ResizeStep", "Provenance", "read_provenance",
           "attach_provenance", "provenance_metadata", "find_record", "mismatch", "warn_mismatch"]

RECORD_KEY = "vitpe:provenance"  # a ':' no module path has, so load_state_dict never reads it
FORMAT = 1
SINCOS = "sincos"  # the mode of a step that regenerated a fixed sin-cos table

Pair = Tuple[int, int]


class ProvenanceWarning(UserWarning):
    """A table is about to be resized differently from how it was made."""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("vitpe-ext")
    except PackageNotFoundError:
        return "unknown"


def _pair(value, name: str) -> Optional[Pair]:
    if value is None:
        return None
    try:
        h, w = value
        if isinstance(h, bool) or isinstance(w, bool) or int(h) != h or int(w) != w:
            raise ValueError
        return (int(h), int(w))
    except (TypeError, ValueError):
        raise ValueError(f"{RECORD_KEY} record: {name} must be [height, width], got {value!r}") from None


def _fmt(pair: Pair) -> str:
    return f"{pair[0]}x{pair[1]}"


@dataclass(frozen=True)
class ResizeStep:
    """One resize of a table: grids, the settings that ran, the layout."""
    old_grid: Pair
    new_grid: Pair
    mode: str                       # an op mode, or "sincos" (the fixed table regenerated, no interpolation)
    align_corners: bool = False
    antialias: bool = False
    scale_offset: Optional[float] = None   # DINOv2's +0.1 coordinate mapping
    profile: Optional[str] = None          # the library profile named, if any
    num_prefix_tokens: int = 1
    old_patch: Optional[Pair] = None       # patch sizes, where known (they differ when the patch changed)
    new_patch: Optional[Pair] = None
    vitpe_version: str = field(default_factory=_version)

    def __post_init__(self):
        # grids and patches as (int, int) tuples whatever was passed (lists from JSON), so steps compare equal
        for name in ("old_grid", "new_grid", "old_patch", "new_patch"):
            value = _pair(getattr(self, name), name)
            if value is None and name.endswith("grid"):
                raise ValueError(f"{RECORD_KEY} record: {name} must be [height, width], got None")
            object.__setattr__(self, name, value)
        if not isinstance(self.mode, str):
            raise ValueError(f"{RECORD_KEY} record: mode must be a string, got {self.mode!r}")

    @classmethod
    def from_settings(cls, old_grid, new_grid, num_prefix_tokens: int, *, profile: Optional[str] = None,
                      mode: Optional[str] = None, align_corners: Optional[bool] = None,
                      antialias: Optional[bool] = None, sincos: bool = False, old_patch=None,
                      new_patch=None) -> "ResizeStep":
        """The step interpolate_pos_embed(..., profile=, mode=, ...) takes
        (the profile resolved, as the op runs it); sincos=True for a
        regenerated sin-cos table. Raises ValueError where the arguments
        contradict the profile."""
        old_grid, new_grid = _pair(old_grid, "old_grid"), _pair(new_grid, "new_grid")
        if sincos:
            return cls(old_grid, new_grid, SINCOS, num_prefix_tokens=int(num_prefix_tokens),
                       old_patch=_pair(old_patch, "old_patch"), new_patch=_pair(new_patch, "new_patch"))
        run = resolve(profile, mode, align_corners, antialias)
        return cls(old_grid, new_grid, run.mode, bool(run.align_corners), bool(run.antialias),
                   run.scale_offset, profile, int(num_prefix_tokens),
                   _pair(old_patch, "old_patch"), _pair(new_patch, "new_patch"))

    @property
    def label(self) -> str:
        """'timm: bicubic aa', 'bilinear ac', 'sincos regenerated'."""
        if self.mode == SINCOS:
            return "sincos regenerated"
        text = self.mode + (" ac" if self.align_corners else "") + (" aa" if self.antialias else "")
        text += f" +{self.scale_offset:g}" if self.scale_offset else ""
        return f"{self.profile}: {text}" if self.profile else text

    def arguments(self) -> Dict[str, Any]:
        """The fewest interpolate_pos_embed arguments that repeat this step:
        {"profile": "timm"}, {"mode": "bilinear", "align_corners": True}, ...
        ({"sincos": True} for a regenerated table)."""
        if self.mode == SINCOS:
            return {"sincos": True}
        base = resolve(self.profile)
        args: Dict[str, Any] = {"profile": self.profile} if self.profile else {}
        if self.mode != base.mode:
            args["mode"] = self.mode
        if self.align_corners != bool(base.align_corners):
            args["align_corners"] = self.align_corners
        if self.antialias != bool(base.antialias):
            args["antialias"] = self.antialias
        return args

    def describe(self) -> str:
        """'14x14 -> 24x24, timm: bicubic aa, prefix 1, patch 16x16 -> 14x14, vitpe 0.1.0'."""
        text = f"{_fmt(self.old_grid)} -> {_fmt(self.new_grid)}, {self.label}, prefix {self.num_prefix_tokens}"
        if self.old_patch and self.new_patch and self.old_patch != self.new_patch:
            text += f", patch {_fmt(self.old_patch)} -> {_fmt(self.new_patch)}"
        return text + f", vitpe {self.vitpe_version}"

    def differences(self, other: "ResizeStep") -> List[str]:
        """What other does differently, as 'mode bilinear, not bicubic'; [] when
        both compute the same numbers (profile names aside: hf and mae are one
        resize; dtype details aside)."""
        diffs = []
        if other.mode != self.mode:
            diffs.append(f"mode {other.mode}, not {self.mode}")
        if SINCOS not in (self.mode, other.mode):
            for name in ("align_corners", "antialias"):
                if getattr(other, name) != getattr(self, name):
                    diffs.append(f"{name} {getattr(other, name)}, not {getattr(self, name)}")
            if (other.scale_offset or 0.0) != (self.scale_offset or 0.0):
                diffs.append(f"scale offset {other.scale_offset or 0:g}, not {self.scale_offset or 0:g}")
        if other.num_prefix_tokens != self.num_prefix_tokens:
            diffs.append(f"{other.num_prefix_tokens} prefix tokens, not {self.num_prefix_tokens}")
        return diffs

    def to_dict(self) -> Dict[str, Any]:
        return {"old_grid": list(self.old_grid), "new_grid": list(self.new_grid), "mode": self.mode,
                "align_corners": self.align_corners, "antialias": self.antialias,
                "scale_offset": self.scale_offset, "profile": self.profile,
                "num_prefix_tokens": self.num_prefix_tokens,
                "old_patch": None if self.old_patch is None else list(self.old_patch),
                "new_patch": None if self.new_patch is None else list(self.new_patch),
                "vitpe_version": self.vitpe_version}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ResizeStep":
        """Inverse of to_dict; ValueError naming what is missing or malformed.
        Unknown keys (from a newer vitpe) are ignored."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{RECORD_KEY} record: a step must be a dict, got {type(data).__name__}")
        for name in ("old_grid", "new_grid", "mode"):
            if name not in data:
                raise ValueError(f"{RECORD_KEY} record: a step without {name!r}")
        mode, offset, profile = data["mode"], data.get("scale_offset"), data.get("profile")
        prefix = data.get("num_prefix_tokens", 1)
        if not isinstance(mode, str) or (profile is not None and not isinstance(profile, str)):
            raise ValueError(f"{RECORD_KEY} record: mode and profile must be strings, got {mode!r}, {profile!r}")
        if isinstance(prefix, bool) or not isinstance(prefix, int) or prefix < 0:
            raise ValueError(f"{RECORD_KEY} record: num_prefix_tokens must be an int >= 0, got {prefix!r}")
        if offset is not None and (isinstance(offset, bool) or not isinstance(offset, (int, float))):
            raise ValueError(f"{RECORD_KEY} record: scale_offset must be a number or null, got {offset!r}")
        return cls(_pair(data["old_grid"], "old_grid"), _pair(data["new_grid"], "new_grid"), mode,
                   bool(data.get("align_corners", False)), bool(data.get("antialias", False)),
                   None if offset is None else float(offset), profile, prefix,
                   _pair(data.get("old_patch"), "old_patch"), _pair(data.get("new_patch"), "new_patch"),
                   str(data.get("vitpe_version", "unknown")))


@dataclass(frozen=True)
class Provenance:
    """How one table was made: its resizes, oldest first."""
    steps: Tuple[ResizeStep, ...]

    def __post_init__(self):
        object.__setattr__(self, "steps", tuple(self.steps))
        if not self.steps:
            raise ValueError(f"{RECORD_KEY} record: a table record needs at least one step")
        for before, after in zip(self.steps, self.steps[1:]):
            if after.old_grid != before.new_grid:
                raise ValueError(f"{RECORD_KEY} record: a step from grid {_fmt(after.old_grid)} follows one to "
                                 f"{_fmt(before.new_grid)}")

    @property
    def source_grid(self) -> Pair:
        """The grid of the table before any recorded resize (pretraining's)."""
        return self.steps[0].old_grid

    @property
    def grid(self) -> Pair:
        """The grid of the table as it is now."""
        return self.steps[-1].new_grid

    @property
    def last(self) -> ResizeStep:
        """The step that made the table as it is: what later resizes should repeat."""
        return self.steps[-1]

    def then(self, step: ResizeStep) -> "Provenance":
        """This record with one more resize (the table at self.grid resized again)."""
        return Provenance(self.steps + (step,))

    def to_dict(self) -> Dict[str, Any]:
        return {"steps": [s.to_dict() for s in self.steps]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Provenance":
        if not isinstance(data, Mapping) or not isinstance(data.get("steps"), (list, tuple)):
            raise ValueError(f"{RECORD_KEY} record: a table record must be {{'steps': [...]}}, got {data!r:.80}")
        return cls(tuple(ResizeStep.from_dict(s) for s in data["steps"]))


# -- reading and writing -------------------------------------------------------------

def _records_from(value: Any) -> Dict[str, Provenance]:
    """The records of a RECORD_KEY value: the dict, or its JSON text."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ValueError(f"{RECORD_KEY} record: not JSON ({exc})") from None
    if not isinstance(value, Mapping) or not isinstance(value.get("tables"), Mapping):
        raise ValueError(f"{RECORD_KEY} record: expected {{'format': 1, 'tables': {{...}}}}, got {value!r:.80}")
    if not isinstance(value.get("format", FORMAT), int) or value.get("format", FORMAT) > FORMAT:
        raise ValueError(f"{RECORD_KEY} record: format {value.get('format')!r} is newer than this vitpe reads "
                         f"({FORMAT}); upgrade vitpe")
    return {str(key): Provenance.from_dict(rec) for key, rec in value["tables"].items()}


def _records_value(records: Mapping[str, Provenance]) -> Dict[str, Any]:
    return {"format": FORMAT, "tables": {key: rec.to_dict() for key, rec in records.items()}}


def read_provenance(source) -> Dict[str, Provenance]:
    """{table key: Provenance} from what holds the record; {} when there is none.

    source: a state dict (the record in its _metadata), a checkpoint dict
    nesting one ({"model": sd, ...}: the first nested state dict that has a
    record), a safetensors header metadata dict (str -> str), or the path
    of a .safetensors (header only) or torch file (torch.load with
    weights_only=True). A malformed record raises ValueError.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.suffix.lower() == ".safetensors":
            from safetensors import safe_open
            with safe_open(str(path), framework="pt") as f:
                source = f.metadata() or {}
        else:
            import torch
            source = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(source, Mapping):
        raise ValueError(f"read_provenance takes a state dict, checkpoint dict, safetensors metadata or a path, "
                         f"got {type(source).__name__}")
    metadata = getattr(source, "_metadata", None)
    if isinstance(metadata, Mapping) and RECORD_KEY in metadata:
        return _records_from(metadata[RECORD_KEY])
    if isinstance(source.get(RECORD_KEY), str):  # safetensors metadata
        return _records_from(source[RECORD_KEY])
    for value in source.values():
        if isinstance(value, Mapping) and isinstance(getattr(value, "_metadata", None), Mapping) \
                and RECORD_KEY in value._metadata:
            return _records_from(value._metadata[RECORD_KEY])
    return {}


def attach_provenance(state_dict: Mapping, records: Mapping[str, Provenance]) -> "OrderedDict":
    """state_dict with records in its _metadata (none: the record removed).

    An OrderedDict is changed in place and returned (its _metadata replaced
    by a copy, never edited where another state dict may share it); another
    mapping is copied into a new OrderedDict, since a plain dict cannot hold
    the attribute. Keys and tensors are not touched."""
    out = state_dict if type(state_dict) is OrderedDict else OrderedDict(state_dict)
    metadata = OrderedDict(getattr(state_dict, "_metadata", None) or ())
    metadata.pop(RECORD_KEY, None)
    if records:
        metadata[RECORD_KEY] = _records_value(records)
    if metadata or hasattr(out, "_metadata"):
        out._metadata = metadata  # type: ignore[attr-defined]
    return out


def provenance_metadata(records: Mapping[str, Provenance],
                        metadata: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """A safetensors header metadata dict: metadata plus the records as JSON
    (none: the record removed)."""
    out = {k: v for k, v in (metadata or {}).items() if k != RECORD_KEY}
    if records:
        out[RECORD_KEY] = json.dumps(_records_value(records), sort_keys=True)
    return out


def find_record(records: Mapping[str, Provenance], key: str) -> Optional[Provenance]:
    """The record of table key, also across a model prefix ("module.pos_embed"
    recorded, "pos_embed" asked, or the other way round); None if none or
    ambiguous."""
    if key in records:
        return records[key]
    hits = [rec for name, rec in records.items() if name.endswith("." + key) or key.endswith("." + name)]
    return hits[0] if len(hits) == 1 else None


def mismatch(record: Provenance, step: ResizeStep, key: str, by: str = "this resize uses") -> Optional[str]:
    """None when step resizes the table the way its last recorded step did;
    else one line saying how it was made and what differs (by: who resizes
    now, e.g. "make_dynamic resizes with")."""
    diffs = record.last.differences(step)
    if not diffs:
        return None
    return (f"{key} was made by resizing {record.last.describe()}, but {by} {step.label} "
            f"({'; '.join(diffs)}): a table resized one way and used another gives the model positions it "
            f"was not trained with")


def warn_mismatch(record: Optional[Provenance], step: ResizeStep, key: str, hint: str,
                  by: str = "this resize uses", stacklevel: int = 3) -> bool:
    """warnings.warn(ProvenanceWarning) when step differs from the record,
    ending with hint (how to match it); True if it warned."""
    if record is None:
        return False
    text = mismatch(record, step, key, by)
    if text is None:
        return False
    warnings.warn(f"{text}; {hint}", ProvenanceWarning, stacklevel=stacklevel)
    return True
