"""The resize record (vitpe_ext.integrations.provenance): its format, where
it lives in torch and safetensors files, the mismatch warnings of
make_dynamic and `vitpe resize`, and `vitpe inspect` showing it. Old
checkpoints without a record must keep working without a word."""
from __future__ import annotations

import json
import warnings
from collections import OrderedDict

import pytest
import torch

import vitpe_ext
from vitpe_ext.command import cli
from vitpe_ext.integrations.provenance import (RECORD_KEY, Provenance, ProvenanceWarning, ResizeStep,
                                               attach_provenance, find_record, mismatch, provenance_metadata,
                                               read_provenance)

from test_checkpoint import make_state

STEP = ResizeStep.from_settings((4, 4), (6, 6), 1, profile="timm", old_patch=(16, 16), new_patch=(16, 16))
RECORD = Provenance((STEP,))


def run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# -- the format ------------------------------------------------------------------------

def test_step_resolves_the_profile_and_round_trips():
    assert (STEP.mode, STEP.align_corners, STEP.antialias, STEP.profile) == ("bicubic", False, True, "timm")
    assert STEP.vitpe_version == vitpe_ext.__version__
    chain = RECORD.then(ResizeStep.from_settings((6, 6), (8, 5), 1, mode="bilinear", align_corners=True))
    assert (chain.source_grid, chain.grid, chain.last.label) == ((4, 4), (8, 5), "bilinear ac")
    text = json.dumps(chain.to_dict())
    assert Provenance.from_dict(json.loads(text)) == chain
    dino = ResizeStep.from_settings((4, 4), (6, 6), 1, profile="dinov2")
    assert dino.scale_offset == 0.1 and dino.label == "dinov2: bicubic +0.1"
    assert ResizeStep.from_dict({**dino.to_dict(), "from_the_future": 1}) == dino
    assert ResizeStep.from_settings((4, 4), (6, 6), 0, sincos=True).arguments() == {"sincos": True}


def test_direct_construction_normalises():
    step = ResizeStep([4, 4], [6, 6], "bilinear", old_patch=[16, 16])
    assert step.old_grid == (4, 4) and step.old_patch == (16, 16) and step.new_patch is None
    chain = Provenance([step]).then(ResizeStep((6, 6), (8, 8), "bilinear"))
    assert chain.steps[1].old_grid == (6, 6) and Provenance.from_dict(chain.to_dict()) == chain
    with pytest.raises(ValueError, match="new_grid must be"):
        ResizeStep((4, 4), None, "bilinear")


@pytest.mark.parametrize("step", [
    ResizeStep.from_settings((4, 4), (6, 6), 1, profile="timm"),
    ResizeStep.from_settings((4, 4), (6, 6), 1, profile="timm", mode="bilinear", align_corners=True),
    ResizeStep.from_settings((4, 4), (6, 6), 1, profile="torchvision", mode="bilinear"),
    ResizeStep.from_settings((4, 4), (6, 6), 1, mode="area"),
    ResizeStep.from_settings((4, 4), (6, 6), 1, mode="bicubic", antialias=True),
    ResizeStep.from_settings((4, 4), (6, 6), 2, profile="dinov2-reg"),
])
def test_arguments_repeat_the_step(step):
    again = ResizeStep.from_settings(step.old_grid, step.new_grid, step.num_prefix_tokens, **step.arguments())
    assert step.differences(again) == [] and again.label == step.label


@pytest.mark.parametrize("bad,needle", [
    ({"format": 1}, "expected {'format': 1, 'tables'"),
    ({"format": 2, "tables": {}}, "format 2 is newer"),
    ({"tables": {"pos_embed": {"steps": []}}}, "at least one step"),
    ({"tables": {"pos_embed": {"steps": [{"old_grid": [4, 4], "new_grid": [6, 6]}]}}}, "without 'mode'"),
    ({"tables": {"pos_embed": {"steps": [{"old_grid": [4], "new_grid": [6, 6], "mode": "x"}]}}}, "old_grid must be"),
    ({"tables": {"pos_embed": {"steps": [STEP.to_dict(), STEP.to_dict()]}}}, "from grid 4x4 follows one to 6x6"),
    ("{not json", "not JSON"),
])
def test_malformed_records_raise_one_line(bad, needle):
    with pytest.raises(ValueError) as info:
        read_provenance({RECORD_KEY: bad if isinstance(bad, str) else json.dumps(bad)})
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_find_record_across_model_prefixes():
    records = {"module.pos_embed": RECORD}
    assert find_record(records, "pos_embed") is RECORD and find_record({"pos_embed": RECORD}, "module.pos_embed")
    assert find_record(records, "decoder_pos_embed") is None
    assert find_record({"a.pos_embed": RECORD, "b.pos_embed": RECORD}, "pos_embed") is None  # ambiguous


# -- where it lives --------------------------------------------------------------------

def _tv_model():
    VisionTransformer = pytest.importorskip("torchvision.models.vision_transformer").VisionTransformer
    return VisionTransformer(image_size=64, patch_size=16, num_layers=1, num_heads=2, hidden_dim=32, mlp_dim=64)


def test_bare_state_dict_keeps_strict_loading_through_torch_save(tmp_path):
    model = _tv_model()
    sd = attach_provenance(model.state_dict(), {"encoder.pos_embedding": RECORD})
    assert list(sd) == list(model.state_dict())  # no key added
    torch.save(sd, tmp_path / "a.pth")
    back = torch.load(tmp_path / "a.pth", weights_only=True)
    assert read_provenance(back) == {"encoder.pos_embedding": RECORD}
    assert back._metadata[""] == sd._metadata[""]  # torch's own module metadata untouched
    result = _tv_model().load_state_dict(back, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert read_provenance(tmp_path / "a.pth") == {"encoder.pos_embedding": RECORD}


def test_plain_and_nested_dicts():
    plain = {"pos_embed": torch.zeros(1, 17, 4)}
    held = attach_provenance(plain, {"pos_embed": RECORD})
    assert type(held) is OrderedDict and held is not plain and not hasattr(plain, "_metadata")
    assert torch.equal(held["pos_embed"], plain["pos_embed"])
    ckpt = {"model": held, "epoch": 3}
    assert read_provenance(ckpt) == {"pos_embed": RECORD}
    assert read_provenance({"model": make_state("timm"), "epoch": 3}) == {}
    assert read_provenance(make_state("timm")) == {}  # a state dict's own _metadata-less form
    emptied = attach_provenance(held, {})
    assert emptied is held and RECORD_KEY not in held._metadata and read_provenance(held) == {}


def test_shared_metadata_is_not_edited_in_place():
    a = _tv_model().state_dict()
    b = OrderedDict(a)
    b._metadata = a._metadata
    attach_provenance(b, {"encoder.pos_embedding": RECORD})
    assert RECORD_KEY not in a._metadata and RECORD_KEY in b._metadata


def test_safetensors_header(tmp_path):
    from safetensors.torch import load_file, save_file
    meta = provenance_metadata({"pos_embed": RECORD}, {"format": "pt", "note": "mine"})
    assert meta["note"] == "mine" and json.loads(meta[RECORD_KEY])["tables"]["pos_embed"] == RECORD.to_dict()
    save_file({"pos_embed": torch.zeros(1, 37, 4)}, str(tmp_path / "a.safetensors"), metadata=meta)
    assert read_provenance(tmp_path / "a.safetensors") == {"pos_embed": RECORD}
    assert load_file(str(tmp_path / "a.safetensors")).keys() == {"pos_embed"}
    assert provenance_metadata({}, meta) == {"format": "pt", "note": "mine"}


# -- mismatches ------------------------------------------------------------------------

@pytest.mark.parametrize("recorded,now,differs", [
    (dict(profile="timm"), dict(profile="timm"), []),
    (dict(profile="timm"), dict(mode="bicubic", antialias=True), []),       # same numbers, no profile named
    (dict(profile="hf"), dict(profile="mae"), []),                          # two names, one resize
    (dict(profile="timm"), dict(mode="bilinear"), ["mode bilinear, not bicubic", "antialias False, not True"]),
    (dict(profile="timm"), dict(profile="torchvision"), ["align_corners True, not False",
                                                         "antialias False, not True"]),
    (dict(profile="dinov2"), dict(profile="hf"), ["scale offset 0, not 0.1"]),
    (dict(sincos=True), dict(profile="mae"), ["mode bicubic, not sincos"]),
])
def test_differences(recorded, now, differs):
    made = ResizeStep.from_settings((4, 4), (6, 6), 1, **recorded)
    assert made.differences(ResizeStep.from_settings((6, 6), (8, 8), 1, **now)) == differs
    line = mismatch(Provenance((made,)), ResizeStep.from_settings((6, 6), (8, 8), 1, **now), "pos_embed")
    assert (line is None) == (not differs)
    if differs:
        assert line.startswith("pos_embed was made by resizing 4x4 -> 6x6") and "\n" not in line


def test_prefix_count_differs():
    assert STEP.differences(ResizeStep.from_settings((6, 6), (8, 8), 0, profile="timm")) == [
        "0 prefix tokens, not 1"]


# -- make_dynamic ----------------------------------------------------------------------

def _recorded_tv_state(**settings):
    sd = _tv_model().state_dict()
    step = ResizeStep.from_settings((2, 2), (4, 4), 1, **settings)
    return attach_provenance(sd, {"encoder.pos_embedding": Provenance((step,))})


def test_make_dynamic_warns_on_load_when_settings_differ():
    pytest.importorskip("torchvision")
    from vitpe_ext.torchvision import make_dynamic
    model = make_dynamic(_tv_model())
    with pytest.warns(ProvenanceWarning) as caught:
        model.load_state_dict(_recorded_tv_state(profile="timm"), strict=True)
    assert len(caught) == 1 and caught[0].filename == __file__  # points at the load_state_dict line
    text = str(caught[0].message)
    assert "encoder.pos_embedding was made by resizing 2x2 -> 4x4, timm: bicubic aa" in text
    assert "make_dynamic resizes with torchvision: bicubic ac" in text
    assert "make_dynamic(model, profile='timm') resizes it the way it was made" in text


def test_make_dynamic_is_silent_when_settings_match_or_no_record(no_warnings):
    pytest.importorskip("torchvision")
    from vitpe_ext.torchvision import make_dynamic
    model = make_dynamic(_tv_model())
    model.load_state_dict(_recorded_tv_state(profile="torchvision"))
    model.load_state_dict(_tv_model().state_dict())                     # an old checkpoint: no record
    model.load_state_dict(dict(_recorded_tv_state(profile="timm")))     # a rebuilt dict drops the record
    timm_like = make_dynamic(_tv_model(), profile="timm")
    timm_like.load_state_dict(_recorded_tv_state(profile="timm"))
    make_dynamic(_tv_model(), provenance=_recorded_tv_state(profile="torchvision"))
    make_dynamic(_tv_model(), provenance=_tv_model().state_dict())
    assert model(torch.randn(1, 3, 96, 64)).shape == (1, 1000)


def test_make_dynamic_provenance_argument_and_remake():
    pytest.importorskip("torchvision")
    from vitpe_ext.torchvision import make_dynamic
    sd = _recorded_tv_state(mode="bilinear")
    with pytest.warns(ProvenanceWarning, match="make_dynamic\\(model, mode='bilinear'\\)") as caught:
        make_dynamic(_tv_model(), provenance=sd)
    assert caught[0].filename == __file__
    with pytest.warns(ProvenanceWarning, match="bilinear"):
        make_dynamic(_tv_model(), provenance=read_provenance(sd)["encoder.pos_embedding"])
    model = make_dynamic(make_dynamic(_tv_model()), profile=None, mode="bilinear")  # remade: one hook, new settings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.load_state_dict(sd)
    other = Provenance((ResizeStep.from_settings((4, 4), (6, 6), 1, profile="torchvision"),))
    with pytest.raises(ValueError, match="describes a 6x6 table, but this model's encoder.pos_embedding is 4x4"):
        make_dynamic(_tv_model(), provenance=other)


def test_make_dynamic_unreadable_record_warns_and_loads():
    pytest.importorskip("torchvision")
    from vitpe_ext.torchvision import make_dynamic
    sd = _tv_model().state_dict()
    sd._metadata[RECORD_KEY] = {"format": 1}
    model = make_dynamic(_tv_model())
    with pytest.warns(UserWarning, match="ignoring the state dict's resize record") as caught:
        model.load_state_dict(sd, strict=True)
    assert caught[0].filename == __file__
    stale = _tv_model().state_dict()  # a record of another grid: not this table's, no warning
    stale = attach_provenance(stale, {"encoder.pos_embedding": Provenance((ResizeStep.from_settings(
        (4, 4), (6, 6), 1, profile="timm"),))})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.load_state_dict(stale, strict=True)


# -- the command -----------------------------------------------------------------------

def _resize(tmp_path, capsys, src, out, *flags):
    code, stdout, err = run(["resize", src, tmp_path / out, *flags], capsys)
    assert code == 0, err
    return stdout, err


@pytest.mark.parametrize("wrap", ["bare", "nested"])
@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_resize_records_in_torch_files_and_strict_loading_still_works(tmp_path, capsys, wrap, suffix):
    state = _tv_model().state_dict()
    obj = state if wrap == "bare" else {"model": state, "epoch": 3}
    src = tmp_path / f"in{suffix}"
    torch.save(obj, src)
    _, err = _resize(tmp_path, capsys, src, f"out{suffix}", "--image-size", "96")
    assert err == ""
    back = torch.load(tmp_path / f"out{suffix}", weights_only=True)
    sd = back if wrap == "bare" else back["model"]
    assert list(back) == list(obj)  # no key added, at either level
    record = read_provenance(sd)["encoder.pos_embedding"]
    assert (record.source_grid, record.grid, record.last.label) == ((4, 4), (6, 6), "torchvision: bicubic ac")
    assert (record.last.num_prefix_tokens, record.last.new_patch) == (1, (16, 16))
    VisionTransformer = pytest.importorskip("torchvision.models.vision_transformer").VisionTransformer
    model = VisionTransformer(image_size=96, patch_size=16, num_layers=1, num_heads=2, hidden_dim=32, mlp_dim=64)
    model.load_state_dict(sd, strict=True)


def test_record_round_trips_through_safetensors_and_back(tmp_path, capsys):
    src = tmp_path / "in.pth"
    torch.save(make_state("timm"), src)
    _resize(tmp_path, capsys, src, "a.safetensors", "--image-size", "96")
    first = read_provenance(tmp_path / "a.safetensors")["pos_embed"]
    assert first.last.label == "timm: bicubic aa" and first.grid == (6, 6)
    _resize(tmp_path, capsys, tmp_path / "a.safetensors", "b.pth", "--image-size", "96")  # no resize: converted
    assert read_provenance(tmp_path / "b.pth") == {"pos_embed": first}
    _resize(tmp_path, capsys, tmp_path / "b.pth", "c.safetensors", "--image-size", "128")
    chain = read_provenance(tmp_path / "c.safetensors")["pos_embed"]
    assert [s.new_grid for s in chain.steps] == [(6, 6), (8, 8)] and chain.source_grid == (4, 4)
    from safetensors import safe_open
    with safe_open(str(tmp_path / "c.safetensors"), framework="pt") as f:
        assert f.metadata()["format"] == "pt"


def test_resize_follows_the_record_and_warns_when_told_otherwise(tmp_path, capsys):
    src = tmp_path / "in.pth"
    state = make_state("torchvision")
    torch.save(state, src)
    _resize(tmp_path, capsys, src, "a.pth", "--image-size", "96", "--profile", "timm")
    a = torch.load(tmp_path / "a.pth", weights_only=True)
    out, err = _resize(tmp_path, capsys, tmp_path / "a.pth", "b.pth", "--image-size", "128")
    assert "timm: bicubic aa (float32) (as its resize record says)" in out
    assert err.startswith("vitpe resize: note:") and "already a resize of a 4x4 table" in err
    b = torch.load(tmp_path / "b.pth", weights_only=True)
    assert torch.equal(b["encoder.pos_embedding"], vitpe_ext.interpolate_pos_embed(
        a["encoder.pos_embedding"], (8, 8), (6, 6), 1, profile="timm"))
    _, err = _resize(tmp_path, capsys, tmp_path / "a.pth", "c.pth", "--image-size", "128", "--profile", "timm")
    assert "warning" not in err
    _, err = _resize(tmp_path, capsys, tmp_path / "a.pth", "d.pth", "--image-size", "128", "--mode", "bilinear")
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vitpe resize: warning: ")
    assert ("encoder.pos_embedding was made by resizing 4x4 -> 6x6, timm: bicubic aa" in lines[0]
            and "mode bilinear, not bicubic" in lines[0] and "pass --profile timm" in lines[0])
    d = read_provenance(tmp_path / "d.pth")["encoder.pos_embedding"]
    assert [s.label for s in d.steps] == ["timm: bicubic aa", "bilinear"]  # what ran is recorded, warning or not


def test_old_checkpoints_work_silently(tmp_path, capsys):
    src = tmp_path / "in.pth"
    torch.save(make_state("timm"), src)
    out, err = _resize(tmp_path, capsys, src, "a.pth", "--image-size", "96", "--mode", "bilinear")
    assert err == ""
    code, out, err = run(["inspect", src], capsys)
    assert code == 0 and err == "" and "resize record" not in out and "as its resize record says" not in out


def test_a_changed_table_drops_its_stale_record(tmp_path, capsys):
    sd = attach_provenance(make_state("timm"), {"pos_embed": Provenance((ResizeStep.from_settings(
        (2, 2), (6, 6), 1, profile="timm"),))})  # says 6x6, the table is 4x4
    torch.save(sd, tmp_path / "in.pth")
    out, err = _resize(tmp_path, capsys, tmp_path / "in.pth", "a.pth", "--image-size", "96", "--mode", "bilinear")
    assert "describes a 6x6 table with 1 prefix tokens, but the table is 4x4" in err and "warning" not in err
    record = read_provenance(tmp_path / "a.pth")["pos_embed"]
    assert record.source_grid == (4, 4) and len(record.steps) == 1


def test_inspect_shows_the_record(tmp_path, capsys):
    src = tmp_path / "in.pth"
    torch.save({"model": make_state("timm")}, src)
    _resize(tmp_path, capsys, src, "a.pth", "--image-size", "96")
    _resize(tmp_path, capsys, tmp_path / "a.pth", "b.pth", "--patch-size", "8", "--mode", "bilinear")
    code, out, err = run(["inspect", tmp_path / "b.pth"], capsys)
    assert code == 0, err
    assert "model/pos_embed: default resize bilinear (as its resize record says)" in out
    assert "model/pos_embed: resize record: source grid 4x4, 2 resizes recorded" in out
    assert "  1. 4x4 -> 6x6, timm: bicubic aa, prefix 1, vitpe " in out
    assert "  2. 6x6 -> 12x12, bilinear, prefix 1, patch 16x16 -> 8x8, vitpe " in out
