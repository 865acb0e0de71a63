"""The resize record (vitpe_ext.integrations.provenance) in checkpoints the
command reads and writes: where a table's record is, the method it implies,
the warning when a resize departs from it, and writing the records back in
the place OUT's format keeps them.

A torch file keeps the records in the _metadata of the state dict holding
the tables (a bare state dict, or the dict under "model"/"state_dict"/...);
a safetensors file in its header metadata. A conversion moves them, so the
record survives .pth -> .safetensors -> .pth.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

from ..integrations.provenance import (RECORD_KEY, Provenance, ResizeStep, attach_provenance, find_record,
                                       mismatch, provenance_metadata, read_provenance)
from .checkpoint import Checkpoint, Embedding, Key, format_pair
from .resizing import Method


def _container(ckpt: Checkpoint, path: Key):
    """The dict at key path: () is the top level, ("model",) the dict under "model"."""
    return ckpt.get(path) if path else ckpt.obj


def container_records(ckpt: Checkpoint, path: Key = ()) -> Dict[str, Provenance]:
    """The records of one state dict of ckpt ({} if none). ValueError when
    the record is malformed (or from a newer vitpe)."""
    if ckpt.format == "safetensors":
        return read_provenance(ckpt.metadata or {})
    container = _container(ckpt, path)
    metadata = getattr(container, "_metadata", None)
    return read_provenance(container) if metadata is not None else {}


def table_record(ckpt: Checkpoint, emb: Embedding, note: Callable[[str], None]) -> Optional[Provenance]:
    """emb's record when it describes the table as it is; None (with a note
    saying why, where there is one) when there is no usable record."""
    try:
        record = find_record(container_records(ckpt, emb.key[:-1]), str(emb.key[-1]))
    except ValueError as exc:
        note(f"{ckpt.path}: ignoring its unreadable resize record ({exc}); a new one replaces it")
        return None
    if record is not None and (record.grid != emb.grid or record.last.num_prefix_tokens != emb.prefix_tokens):
        note(f"{ckpt.path}: the resize record of {emb.name} describes a {format_pair(record.grid)} table with "
             f"{record.last.num_prefix_tokens} prefix tokens, but the table is {format_pair(emb.grid)} with "
             f"{emb.prefix_tokens}: it was changed after that resize; the record is dropped")
        return None
    return record


def method_from_record(record: Provenance) -> Optional[Method]:
    """The Method repeating the record's last step; None when this vitpe
    cannot (a profile it no longer has)."""
    try:
        args = record.last.arguments()
        method = Method(**args)
        step = ResizeStep.from_settings((1, 1), (1, 1), record.last.num_prefix_tokens, **args)
    except (ValueError, TypeError):
        return None
    return method if not record.last.differences(step) else None


def step_for(method: Method, emb: Embedding, new_grid, new_patch=None) -> ResizeStep:
    """The record step of resizing emb to new_grid with method."""
    return ResizeStep.from_settings(emb.grid, new_grid, emb.prefix_tokens, profile=method.profile,
                                    mode=method.mode, align_corners=method.align_corners,
                                    antialias=method.antialias, sincos=method.sincos, old_patch=emb.patch,
                                    new_patch=new_patch or emb.patch)


def _flags(step: ResizeStep) -> str:
    parts = []
    for name, value in step.arguments().items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + flag[2:])
        else:
            parts.append(f"{flag} {value}")
    return " ".join(parts) or "no --profile/--mode"


def mismatch_warning(record: Optional[Provenance], step: ResizeStep, emb: Embedding) -> Optional[str]:
    """The warning line when step resizes emb differently from its record."""
    if record is None:
        return None
    text = mismatch(record, step, emb.name)
    return None if text is None else f"{text}; pass {_flags(record.last)} to resize it the way it was made"


def describe_record(record: Provenance) -> List[str]:
    """Lines for vitpe inspect: the source grid and every resize."""
    lines = [f"source grid {format_pair(record.source_grid)}, {len(record.steps)} resize"
             f"{'s' if len(record.steps) > 1 else ''} recorded"]
    lines += [f"  {i}. {step.describe()}" for i, step in enumerate(record.steps, 1)]
    return lines


def store_records(ckpt: Checkpoint, steps: Dict[Key, ResizeStep], records: Dict[Key, Optional[Provenance]],
                  out_format: str) -> None:
    """Put the records into ckpt where out_format keeps them: each resized
    table's record extended by its step (records[key]: the table's usable
    record, None to start a new one), every other table's record carried."""
    paths = {key[:-1] for key in steps} | {()}
    for path in sorted(paths, key=len):
        try:
            table_records = dict(container_records(ckpt, path))
        except ValueError:
            table_records = {}  # unreadable: noted when read, replaced here
        for key, step in steps.items():
            if key[:-1] != path:
                continue
            name = str(key[-1])
            for stale in [n for n in table_records if find_record({n: table_records[n]}, name) is not None]:
                del table_records[stale]  # the old record, maybe under a "module."-prefixed name
            before = records.get(key)
            table_records[name] = before.then(step) if before is not None else Provenance((step,))
        if out_format == "safetensors":
            if path == ():  # a safetensors OUT holds one flat state dict (check_storable)
                base = ckpt.metadata if ckpt.format == "safetensors" else None
                if table_records or (base and RECORD_KEY in base):
                    ckpt.metadata = provenance_metadata(table_records, base)
            continue
        container = _container(ckpt, path)
        if not table_records and getattr(container, "_metadata", None) is None:
            continue  # nothing to carry: leave the state dict as it was
        held = attach_provenance(container, table_records)
        if held is not container:  # a plain dict became an OrderedDict, to hold _metadata
            if path:
                ckpt.set(path, held)
            else:
                ckpt.obj = held
