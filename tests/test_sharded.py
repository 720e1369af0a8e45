"""A model sharded across ranks (FSDP2's ``fully_shard``, DTensor parameters): each rank sets its own
shards in place, and the grid equals a plain ``load_state_dict`` loop over the whole model."""

import json
import subprocess
import sys
import textwrap

import pytest

WORKER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    import losstrail as lt

    def build():
        torch.manual_seed(0)
        return torch.nn.Sequential(
            torch.nn.Conv1d(2, 6, 3), torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(6 * 6, 10),
            torch.nn.LayerNorm(10), torch.nn.Linear(10, 3),
        )

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    torch.manual_seed(1)
    X, y = torch.randn(40, 2, 8), torch.randint(0, 3, (40,))
    whole = build()
    before = {n: p.detach().clone() for n, p in whole.named_parameters()}
    model = build()
    for layer in list(model)[:-1]:  # the last layer's parameters belong to the root, which keeps them whole
        if any(True for _ in layer.parameters()):  # after a forward pass
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    xs, ys = np.linspace(-1, 1, 4), np.linspace(-0.5, 0.5, 3)

    def loop(plane):  # the plain loop over the whole model: each point's weights loaded, the model called
        names = [n for n, _ in whole.named_parameters()]
        sizes = [p.numel() for _, p in whole.named_parameters()]
        cut = np.cumsum(sizes)[:-1]
        out = np.zeros((len(ys), len(xs)))
        for i, b in enumerate(ys):
            for j, a in enumerate(xs):
                flat = plane.origin.astype(np.float64) + a * plane.u + b * plane.v
                state = {n: torch.from_numpy(piece.astype(np.float32)).reshape(before[n].shape)
                         for n, piece in zip(names, np.split(flat, cut))}
                whole.load_state_dict(state)
                with torch.no_grad():
                    out[i, j] = float(torch.nn.functional.cross_entropy(whole(X), y))
        whole.load_state_dict(before)
        return out

    results = {}
    cases = {
        "filter": dict(method="filter"), "layer": dict(method="layer"), "random": dict(method="random"),
        "filter-seed": dict(method="filter", store="seed"),
    }
    for name, case in cases.items():
        method = case.pop("method")
        plane = lt.make_plane(model, method, seed=5, **case)
        alone = lt.make_plane(whole, method, seed=5, **case)  # the same plane in one process
        same_plane = all(np.array_equal(getattr(plane, f), getattr(alone, f)) for f in ("origin", "u", "v"))
        surface = lt.loss_surface(model, (X, y), plane, xs, ys, batch_size=16)
        results[name] = {"same_plane": bool(same_plane), "error": float(np.abs(surface.loss - loop(alone)).max())}
    u = [torch.randn(p.shape, generator=torch.Generator().manual_seed(k)) for k, p in enumerate(whole.parameters())]
    v = [torch.randn(p.shape, generator=torch.Generator().manual_seed(9 + k)) for k, p in enumerate(whole.parameters())]
    plane = lt.make_plane(model, "custom", directions=(u, v))
    alone = lt.make_plane(whole, "custom", directions=(u, v))
    surface = lt.loss_surface(model, (X, y), plane, xs, ys, batch_size=16)
    results["custom"] = {"same_plane": bool(np.array_equal(plane.u, alone.u)),
                         "error": float(np.abs(surface.loss - loop(alone)).max())}

    calls = [0]
    def breaks(out, target):  # raises in the middle of the grid
        calls[0] += 1
        if calls[0] == 5:
            raise RuntimeError("stopped mid-grid")
        return torch.nn.functional.cross_entropy(out, target)
    try:
        lt.loss_surface(model, (X, y), lt.make_plane(model, "filter", seed=2), xs, ys, loss_fn=breaks)
        results["raised"] = False
    except RuntimeError:
        results["raised"] = True
    after = {n: p.full_tensor() for n, p in model.named_parameters()}
    results["restored"] = all(torch.equal(after[n], before[n]) for n in before)
    with torch.no_grad():  # the model computes at its own weights again, the root's included
        results["same_outputs"] = bool(torch.allclose(model(X), whole(X), atol=1e-6))
    try:
        lt.loss_surface(model, (X, y), plane, xs, ys, mode="vmap")
        results["vmap"] = ""
    except ValueError as err:
        results["vmap"] = str(err)
    try:
        lt.make_plane(model, "hessian", data=(X, y))
        results["hessian"] = ""
    except ValueError as err:
        results["hessian"] = str(err)
    try:
        lt.Recorder(model)
        results["recorder"] = ""
    except ValueError as err:
        results["recorder"] = str(err)
    if rank == 0:
        json.dump(results, open(sys.argv[1], "w"))
    dist.destroy_process_group()
    """
)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sharded")
    script, out = folder / "worker.py", folder / "results.json"
    script.write_text(WORKER)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    done = subprocess.run([*command, str(script), str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text()), done.stderr


@pytest.mark.parametrize("method", ["filter", "layer", "random", "filter-seed", "custom"])
def test_a_sharded_grid_equals_a_plain_loop_over_the_whole_model(sharded, method):
    results, _ = sharded
    assert results[method]["same_plane"]  # the directions one process draws for the same seed
    assert results[method]["error"] < 1e-6


def test_the_shards_are_put_back_exactly_after_an_exception_mid_grid(sharded):
    results, _ = sharded
    assert results["raised"] and results["restored"] and results["same_outputs"]


def test_flat_copies_of_a_sharded_model_are_refused_with_the_fix(sharded):
    results, _ = sharded
    assert "sharded across ranks" in results["vmap"] and "mode='auto' or 'inplace'" in results["vmap"]


def test_a_hessian_plane_of_a_sharded_model_is_refused_with_the_fix(sharded):
    results, _ = sharded
    assert "sharded across ranks" in results["hessian"] and "'filter'" in results["hessian"]


def test_recording_a_sharded_models_path_is_refused_with_the_fix(sharded):
    results, _ = sharded
    assert "sharded across ranks" in results["recorder"] and "make_plane(model, 'filter')" in results["recorder"]


def test_only_the_first_rank_shows_progress(sharded):
    _, stderr = sharded
    # each bar starts at 0 of 12 points x 3 batches once: 5 grids (and one that raised, of 12 batches), rank 0 alone
    assert stderr.count("| 0/36 [") == 5 and stderr.count("| 0/12 [") == 1
