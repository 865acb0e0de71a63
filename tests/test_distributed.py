"""Issue #15: dynamic-resolution ViTs under PyTorch's own distributed engine.

Two ranks (gloo on the CPU; nccl on CUDA where two GPUs are present) train a tiny
torchvision ViT (make_dynamic) and a tiny timm ViT (dynamic_img_size, vitpe's patch)
with DDP and with FSDP2, each rank at its own resolution, AdamW over
layer_decay_groups with a warmup-cosine schedule. Everything is held to one process
running the same steps on all shards (distributed_workers.reference): the op runs in
each rank's forward, the table's gradient is the averaged one, every parameter moves
as in the single-process run, and a distributed checkpoint of the FSDP2 model brings
the table and the optimizer back bit for bit.

FSDP2 does not need the ranks at one resolution: it gathers and reduces parameters
and gradients, whose shapes do not depend on the input; only activations differ.
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("torchvision")
pytest.importorskip("timm")
import torch.distributed as dist  # noqa: E402

import vitpe_ext  # noqa: E402
import vitpe_ext.integrations.dynamic as dynamic  # noqa: E402
from conftest import count_op_calls  # noqa: E402

if not dist.is_available():
    pytest.skip("torch.distributed is not available", allow_module_level=True)

import distributed_workers as w  # noqa: E402

BACKENDS = [
    pytest.param("gloo", id="gloo-cpu"),
    pytest.param("nccl", id="nccl-cuda", marks=pytest.mark.skipif(
        not (torch.cuda.is_available() and torch.cuda.device_count() >= w.WORLD and dist.is_nccl_available()),
        reason=f"needs {w.WORLD} CUDA GPUs and NCCL")),
]
SETUPS = ("ddp", "fsdp")

# "Equal within fp32 rounding": measured differences are a few ulps of each tensor's
# largest value (the ranks sum the shards' gradients in another order and split the
# batch differently); 1e-5 of it is ~80 ulps. A gradient that missed the other rank's
# shard is off by its own size (test_the_table_gradient_is_the_all_reduced_one).
REL = 1e-5


def assert_close(actual, expected, what):
    scale = max(expected.abs().max().item(), 1e-3) if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=0, atol=REL * scale, msg=lambda m: f"{what}: {m}")


def key_bias(name, kind):
    """The key slice of an attention block's input-projection bias, or None. Softmax
    ignores a constant added to every key, so this bias has no gradient in exact
    arithmetic: the computed one is rounding noise, and AdamW, which divides by the
    gradient's own size, turns noise into a step of about lr with a random sign."""
    if name.endswith("self_attention.in_proj_bias" if kind == "torchvision" else "attn.qkv.bias"):
        return slice(32, 64)  # (q, k, v), hidden size 32
    return None


@pytest.fixture(scope="module", params=BACKENDS)
def ranks(request, tmp_path_factory):
    """Every scenario, run once per backend by WORLD spawned ranks: (device, results by rank)."""
    backend = request.param
    results = w.launch(backend, tmp_path_factory.mktemp(f"dist-{backend}"))
    return torch.device("cuda", 0) if backend == "nccl" else torch.device("cpu"), results


@pytest.fixture(scope="module")
def references(ranks):
    """The single-process run of each model, on the ranks' kind of device."""
    device, _ = ranks
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # as the ranks
    try:
        return {kind: w.reference(kind, device) for kind in w.KINDS}
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


def steps_of(ranks, setup, kind):
    return [r[f"{setup}-{kind}"]["steps"] for r in ranks[1]]


@pytest.mark.parametrize("kind", w.KINDS)
@pytest.mark.parametrize("setup", SETUPS)
def test_each_rank_runs_its_own_resolution_through_the_op(ranks, setup, kind):
    native = w.NATIVE // w.PATCH
    for rank, steps in enumerate(steps_of(ranks, setup, kind)):
        for step, record in enumerate(steps):
            h, w_ = w.SIZES[step][rank]
            assert record["size"] == (h, w_)
            grid = (h // w.PATCH, w_ // w.PATCH)
            # the native grid adds the table itself; any other runs the op, once, in the forward
            assert record["op_calls"] == ([] if grid == (native, native) else [grid]), (rank, step)
    assert any(a != b for a, b in w.SIZES), "no step with the ranks at different resolutions"


@pytest.mark.parametrize("kind", w.KINDS)
@pytest.mark.parametrize("setup", SETUPS)
def test_gradients_and_losses_match_the_single_process_run(ranks, references, setup, kind):
    ref = references[kind]["steps"]
    for rank, steps in enumerate(steps_of(ranks, setup, kind)):
        for step, (got, want) in enumerate(zip(steps, ref)):
            assert got["loss"] == pytest.approx(want["losses"][rank], rel=REL)
            assert set(got["grads"]) == set(want["grads"])
            for name, grad in want["grads"].items():
                assert_close(got["grads"][name], grad, f"rank {rank} step {step} grad {name}")


@pytest.mark.parametrize("kind", w.KINDS)
@pytest.mark.parametrize("setup", SETUPS)
def test_the_table_gradient_is_the_all_reduced_one(ranks, references, setup, kind):
    table = w.TABLE[kind]
    steps = steps_of(ranks, setup, kind)
    placement = ranks[1][0][f"{setup}-{kind}"].get("table_placement", ["Replicate()"])
    for step, want in enumerate(references[kind]["steps"]):
        mean = want["grads"][table]
        assert mean.abs().max() > 0.1, "a zero gradient would compare equal to anything"
        # what each rank would hold had nothing been reduced: far outside the tolerance
        for local in want["local_table_grads"]:
            assert (local - mean).abs().max() > 100 * REL * mean.abs().max()
        # every rank ends with the same bits, the whole table's and every other gradient
        for name in want["grads"]:
            assert torch.equal(steps[0][step]["grads"][name], steps[1][step]["grads"][name]), (step, name)
        # the piece each rank keeps: all of it under DDP, its shard under FSDP2
        dim = int(placement[0][2]) if placement[0].startswith("S(") else None
        pieces = [mean] * w.WORLD if dim is None else list(torch.chunk(mean, w.WORLD, dim))
        pieces += [mean.narrow(dim or 0, 0, 0)] * (w.WORLD - len(pieces))  # FSDP2's empty shards
        for rank in range(w.WORLD):
            assert_close(steps[rank][step]["local_table_grad"], pieces[rank], f"rank {rank} step {step} shard")
    if setup == "fsdp" and kind == "torchvision":  # dim-0 sharding of a (1, N, C) table
        assert [s[0]["local_table_grad"].shape[0] for s in steps] == [1, 0]


@pytest.mark.parametrize("kind", w.KINDS)
@pytest.mark.parametrize("setup", SETUPS)
def test_parameters_and_learning_rates_follow_the_single_process_run(ranks, references, setup, kind):
    ref = references[kind]["steps"]
    steps = steps_of(ranks, setup, kind)
    for step, want in enumerate(ref):
        for rank in range(w.WORLD):
            got = steps[rank][step]
            assert got["lrs"] == want["lrs"]  # the schedule and the groups, exactly
            for name, param in want["params"].items():
                mine = got["params"][name]
                keys = key_bias(name, kind)
                if keys is not None:
                    # the noise AdamW amplifies is below the tolerance before the step
                    grad = want["grads"][name]
                    assert grad[keys].abs().max() < REL * grad.abs().max()
                    mine, param = torch.cat([mine[:keys.start], mine[keys.stop:]]), \
                        torch.cat([param[:keys.start], param[keys.stop:]])
                assert_close(mine, param, f"rank {rank} step {step} param {name}")
        for name in want["params"]:
            assert torch.equal(steps[0][step]["params"][name], steps[1][step]["params"][name]), (step, name)
    table = w.TABLE[kind]
    first = w.build(kind).state_dict()[table]
    assert (ref[-1]["params"][table] - first).abs().max() > 1e-3, "the table did not train"


@pytest.mark.parametrize("kind", w.KINDS)
@pytest.mark.parametrize("setup", SETUPS)
def test_evaluation_between_steps_sees_the_new_weights(ranks, references, setup, kind):
    # no_grad forwards at one size after every step: make_dynamic's cache path. Under
    # FSDP2 the gathered table keeps its version counter while its values change (vitpe
    # must not serve the previous step's table from its cache).
    for rank, steps in enumerate(steps_of(ranks, setup, kind)):
        for step, (got, want) in enumerate(zip(steps, references[kind]["steps"])):
            assert_close(got["probe"], want["probe"], f"rank {rank} eval after step {step}")


@pytest.mark.parametrize("setup", SETUPS)
def test_make_dynamic_caches_under_ddp_but_not_under_fsdp2(ranks, setup):
    # Two evaluations after each step (the table changed: the first always resizes).
    # DDP's parameters are the optimizer's: a step bumps their version, so the cache can
    # serve the second. FSDP2's gathered table keeps its version while its values change,
    # so vitpe must resize every time (the outcome: the test above; this: the mechanism,
    # which does not depend on where the allocator puts the gathered table).
    grid = tuple(s // w.PATCH for s in w.PROBE_SIZE)
    for steps in steps_of(ranks, setup, "torchvision"):
        for record in steps:
            assert record["eval_op_calls"] == [grid] * (1 if setup == "ddp" else 2)


def test_make_dynamic_does_not_cache_under_replicate(ranks, references):
    # replicate (FSDP2's machinery, unsharded) refills the gathered table in place with
    # its version kept, as fully_shard does, but marks no module FSDP-managed: vitpe finds
    # the table among the parameters of the module replicate wrapped (the model; the
    # table's owner is its encoder).
    if ranks[1][0]["replicate-torchvision"] is None:
        pytest.skip("this torch has no torch.distributed._composable.replicate_with_fsdp")
    grid = tuple(s // w.PATCH for s in w.PROBE_SIZE)
    for rank, steps in enumerate(steps_of(ranks, "replicate", "torchvision")):
        for step, (got, want) in enumerate(zip(steps, references["torchvision"]["steps"])):
            assert got["eval_op_calls"] == [grid] * 2, (rank, step)
            assert_close(got["probe"], want["probe"], f"rank {rank} eval after step {step}")


@pytest.mark.parametrize("kind", w.KINDS)
def test_distributed_checkpoint_round_trips_bitwise(ranks, kind):
    table = w.TABLE[kind]
    for rank, results in enumerate(ranks[1]):
        dc = results[f"fsdp-{kind}"]["dcp"]
        assert set(dc["loaded"]) == set(dc["saved"])
        for name, saved in dc["saved"].items():
            assert torch.equal(dc["loaded"][name], saved), (rank, name)
        assert torch.equal(dc["loaded_local_table"], dc["saved_local_table"])
        # the loaded model started elsewhere (another seed), so equality means it was loaded
        assert not torch.equal(w.build(kind, seed=1).state_dict()[table], dc["saved"][table])

        saved, loaded = dc["saved_optim"], dc["loaded_optim"]
        assert set(saved) == set(loaded) and f"{table}.exp_avg_sq" in saved
        for key, value in saved.items():
            if torch.is_tensor(value):
                assert torch.equal(loaded[key], value), (rank, key)
            else:
                assert loaded[key] == value, (rank, key)
        assert saved[f"{table}.step"].item() == len(w.SIZES)

        # and training goes on as if nothing had happened: one more step, the same bits
        a, b = dc["next_saved"], dc["next_loaded"]
        assert a["lrs"] == b["lrs"] and a["loss"] == b["loss"]
        for name in a["params"]:
            assert torch.equal(a["params"][name], b["params"][name]), (rank, name)


def test_the_op_gives_the_same_bits_on_one_thread_per_rank(ranks, num_threads):
    torch.set_num_threads(2)  # the CPU kernel splits this table's rows over both
    here = w.thread_check()
    for rank, results in enumerate(ranks[1]):
        there = results["thread_check"]
        assert there["threads"] == 1
        assert torch.equal(there["out"], here["out"]) and torch.equal(there["grad"], here["grad"]), rank


def test_dynamic_pos_embed_is_not_cached_in_a_module_fsdp_manages(monkeypatch):
    # DynamicPosEmbed passes itself as the table's owner; fully_shard marks every module it
    # manages this way (the runs above show make_dynamic's encoder marked and uncached).
    calls = count_op_calls(monkeypatch, dynamic)
    pe = vitpe_ext.DynamicPosEmbed(torch.randn(1, 1 + 4 * 4, 8), (4, 4))
    with torch.no_grad():
        pe((6, 6)), pe((6, 6))
        assert len(calls) == 1
        pe._is_fsdp_managed_module = True
        pe((6, 6)), pe((6, 6))
    assert len(calls) == 3
