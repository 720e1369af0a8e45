"""Grid points set in place in the model's own tensors: the same losses as a plain ``load_state_dict`` loop,
the model's weights bit-identical afterwards (also after an exception mid-grid), planes around a model held
per tensor in its dtype, and the memory a plane and its grid take on a ~30M-parameter model."""

import copy

import numpy as np
import pytest
import torch

import losstrail as lt
from losstrail.evaluation.grids import loss_surface, plane_grid
from probes import peak_around_a_wide_mlp


class _Net(torch.nn.Module):
    """A small conv net whose forward casts its input to its own dtype (so a bfloat16 copy runs on float data)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.fc1 = torch.nn.Linear(4 * 6 * 6, 16)
        self.fc2 = torch.nn.Linear(16, 3)
        self.calls = 0
        self.fail_at = None

    def forward(self, x):
        self.calls += 1
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise RuntimeError("boom")
        x = x.to(self.conv.weight.dtype)
        h = torch.relu(self.conv(x)).flatten(1)
        return self.fc2(torch.relu(self.fc1(h)))


@pytest.fixture
def net_and_data():
    torch.manual_seed(0)
    net = _Net()
    X, y = torch.randn(96, 1, 8, 8), torch.randint(0, 3, (96,))
    return net, (X, y)


def _weights(model) -> dict:
    return {n: p.detach().clone() for n, p in model.state_dict().items()}


def _reference(model, data, plane, xs, ys) -> np.ndarray:
    """The loss at every grid point by a plain loop: a fresh copy of the model, ``load_state_dict``, one forward."""
    X, y = data
    copy_ = copy.deepcopy(model)
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [int(np.prod(s)) for s in shapes]
    state = copy_.state_dict()
    out = np.zeros((len(ys), len(xs)))
    for i, b in enumerate(ys):
        for j, a in enumerate(xs):
            flat = plane.origin + np.float32(a) * plane.u + np.float32(b) * plane.v
            pieces = np.split(flat, np.cumsum(sizes)[:-1])
            for n, s, piece in zip(names, shapes, pieces):
                state[n] = torch.from_numpy(piece.reshape(s).copy()).to(state[n].dtype)
            copy_.load_state_dict(state)
            with torch.no_grad():
                out[i, j] = float(torch.nn.functional.cross_entropy(copy_.eval()(X), y))
    return out


def test_in_place_grid_equals_a_load_state_dict_loop_and_leaves_the_weights_bit_identical(net_and_data):
    net, data = net_and_data
    rng = np.random.default_rng(0)
    P = sum(p.numel() for p in net.parameters())
    origin = np.concatenate([p.detach().reshape(-1).numpy() for p in net.parameters()]) + rng.normal(0, 0.01, P)
    flat = lt.Plane(origin.astype(np.float32), *rng.normal(0, 0.05, (2, P)).astype(np.float32), "custom")
    around = lt.make_plane(net, "filter", seed=1)  # per tensor, origin = the model's own tensors
    xs, ys = np.linspace(-1, 1, 4), np.linspace(-0.5, 1.5, 3)
    before = _weights(net)
    pointers = [p.data_ptr() for p in net.parameters()]
    for plane in (flat, around):
        got = loss_surface(net, data, plane, xs, ys, mode="inplace", quiet=True).loss
        want = _reference(net, data, plane, xs, ys)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        for n, t in _weights(net).items():
            assert torch.equal(t, before[n]), n  # bit for bit
        assert [p.data_ptr() for p in net.parameters()] == pointers  # the model's own tensors, not copies
    # 'auto' evaluates a plane around a model in place too, with the same result as the functional (vmap) path
    auto = loss_surface(net, data, around, xs, ys, quiet=True).loss
    vmapped = loss_surface(net, data, lt.Plane(around.origin, around.u, around.v, "filter"), xs, ys, mode="vmap",
                           quiet=True).loss  # fmt: skip
    np.testing.assert_allclose(auto, vmapped, rtol=0, atol=1e-6)


def test_an_exception_mid_grid_restores_the_weights_exactly(net_and_data):
    net, data = net_and_data
    plane = lt.make_plane(net, "layer", seed=2, keep_biases=True)
    before = _weights(net)
    net.calls, net.fail_at = 0, 5  # the evaluator's check pass is call 1; the 4th grid point raises
    with pytest.raises(RuntimeError, match="boom"):
        loss_surface(net, data, plane, np.linspace(-1, 1, 3), np.linspace(-1, 1, 3), quiet=True)
    assert net.calls == 5
    for n, t in _weights(net).items():
        assert torch.equal(t, before[n]), n
    net.fail_at = None
    assert np.isfinite(loss_surface(net, data, plane, [0.0], [0.0], quiet=True).loss).all()


def test_a_plane_around_a_changed_model_is_refused(net_and_data):
    net, data = net_and_data
    plane = lt.make_plane(net, "filter", seed=0)
    with torch.no_grad():
        net.fc2.bias.add_(1.0)
    with pytest.raises(ValueError, match=r"model was changed .* make the plane again"):
        loss_surface(net, data, plane, [0.0], [0.0], quiet=True)


def test_a_bfloat16_model_gets_bfloat16_directions_and_the_float32_grid_within_its_precision(net_and_data):
    net, data = net_and_data
    half = copy.deepcopy(net).to(torch.bfloat16)
    plane32 = lt.make_plane(net, "filter", seed=4)
    plane16 = lt.make_plane(half, "filter", seed=4)
    assert {t.dtype for t in plane16.tensors.u + plane16.tensors.v} == {torch.bfloat16}
    # the same draw, rounded to bfloat16
    np.testing.assert_allclose(plane16.u, plane32.u, rtol=2**-7, atol=1e-6)
    xs = ys = np.linspace(-1, 1, 5)
    loss32 = loss_surface(net, data, plane32, xs, ys, quiet=True).loss
    loss16 = loss_surface(half, data, plane16, xs, ys, quiet=True).loss
    # bfloat16 keeps 8 significant bits (relative 2^-8 per rounding); a few layers of them
    np.testing.assert_allclose(loss16, loss32, rtol=0.03)
    assert not np.array_equal(loss16, loss32)  # it did run in bfloat16


def test_seeded_directions_drawn_again_per_point_equal_stored_ones(net_and_data):
    net, data = net_and_data
    stored = lt.make_plane(net, "filter", seed=5)
    seeded = lt.make_plane(net, "filter", seed=5, store="seed")
    assert seeded.tensors.u is None and seeded.tensors.v is None
    np.testing.assert_array_equal(seeded.u, stored.u)
    xs = ys = np.linspace(-1, 1, 3)
    np.testing.assert_array_equal(
        loss_surface(net, data, seeded, xs, ys, quiet=True).loss,
        loss_surface(net, data, stored, xs, ys, quiet=True).loss,
    )


def test_planes_around_a_model_and_a_state_dict(net_and_data, tmp_path):
    net, data = net_and_data
    plane = lt.make_plane(net, "filter", seed=0)
    from_state = lt.make_plane(net.state_dict(), "filter", seed=0, model=net)
    np.testing.assert_array_equal(from_state.u, plane.u)
    assert plane.explained is None and plane.n_params == sum(p.numel() for p in net.parameters())
    # filter-normalized: each filter of u has the norm of the model's filter; biases zero
    conv_u = plane.tensors.u[0]
    np.testing.assert_allclose(conv_u.flatten(1).norm(dim=1), net.conv.weight.detach().flatten(1).norm(dim=1),
                               rtol=1e-5)  # fmt: skip
    assert not plane.tensors.u[1].any()
    # saved as flat arrays: the run directory format is unchanged, and loads back
    from losstrail.store.rundir import load_run_value, save_run_value

    save_run_value(tmp_path, plane)
    loaded = load_run_value(tmp_path, lt.Plane)
    assert loaded.tensors is None
    np.testing.assert_array_equal(loaded.origin, plane.origin)
    np.testing.assert_array_equal(loaded.v, plane.v)
    custom = lt.make_plane(net, "custom", directions=(plane.tensors.u, {n: t for n, t in zip(
        [n for n, _ in net.named_parameters()], plane.tensors.v)}))  # fmt: skip
    np.testing.assert_allclose(np.linalg.norm(custom.u), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match=r"reduction_method='pca' is fitted to a path"):
        lt.make_plane(net, "pca")
    with pytest.raises(ValueError, match=r"make_plane takes a Trajectory, a model"):
        lt.make_plane("model.pt", "filter")


def test_the_window_of_a_plane_around_a_model_is_one_filter_unit_and_widens_for_a_path(net_and_data):
    net, _ = net_and_data
    plane = lt.make_plane(net, "filter", seed=0)
    xs, ys = plane_grid(plane, resolution=5)
    assert xs.tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0] and ys.tolist() == xs.tolist()
    xs, ys = lt.plane_grid(plane, np.array([[-3.0, 0.0], [0.0, 0.5]]), resolution=5)
    assert xs.min() < -3 and xs.max() >= 1 and ys.min() <= -1


@pytest.mark.parametrize("store, copies", [("tensors", 3), ("seed", 2)])
def test_a_plane_and_its_grid_stay_within_the_model_and_its_directions_plus_a_gib(tmp_path, store, copies):
    """Measured in a fresh process: its peak resident memory, less what it held before the model was built.

    The issue's bound is ``copies`` x the parameters' bytes + 1 GiB (the model and two stored directions, or
    the model alone when they are drawn again from their seeds). With seeds the grid sets and draws one
    module's parameters at a time, so the peak stays within 0.75 of a model above the model (measured 2.2x;
    a whole working copy of the parameters, as before, measured 4.0x). With stored directions the heap's
    reuse of freed blocks varies by +-0.4x from run to run here (3.4x to 4.0x measured), which hides the
    difference the whole copy makes (4.2x), so only the issue's bound is asserted."""
    body = """
        plane = lt.make_plane(model, "filter", seed=0, store=sys.argv[1])
        xs, ys = lt.plane_grid(plane, resolution=2)
        surface = lt.loss_surface(model, (X, y), plane, xs, ys, quiet=True)
        figures = {"finite": bool(np.isfinite(surface.loss).all())}
    """
    figures, _ = peak_around_a_wide_mlp(tmp_path, "ReLU", body, store)
    assert figures["finite"]
    assert figures["params"] > 100e6
    assert figures["peak"] < copies * figures["params"] + (1 << 30), figures
    if store == "seed":
        assert figures["peak"] < (copies + 0.75) * figures["params"], figures


def test_a_plane_around_a_model_draws_without_a_path(net_and_data, tmp_path):
    net, data = net_and_data
    plane = lt.make_plane(net, "filter", seed=0)
    xs, ys = lt.plane_grid(plane, resolution=5)
    surface = loss_surface(net, data, plane, xs, ys, quiet=True)
    for name, view in (("still.png", "2d"), ("turn.png", "3d"), ("page.html", "2d"), ("one.gif", "2d")):
        made = lt.animate(plane, surface, tmp_path / name, view=view, quiet=True)
        assert made.frames == 1 and (tmp_path / name).stat().st_size > 1000
    centre = lt.animate.__globals__["centre_point"](plane, surface)
    assert centre.xy.tolist() == [[0.0, 0.0]] and centre.loss[0] == pytest.approx(surface.loss[2, 2])
    # Read out as a model, not as a training run: no step, epoch, optimizer or end of training.
    from losstrail.renderers._figure import PathFigure, readout

    assert centre.alone and readout(centre, 0).startswith("the model (plane centre)\nloss ")
    _, labels = PathFigure(centre, surface).ax.get_legend_handles_labels()
    assert "the model (plane centre)" in labels and not {"optimizer", "end of training (plane centre)"} & set(labels)
    page = (tmp_path / "page.html").read_text()
    assert '"name":"model"' in page and "step %{customdata[0]}" not in page
    line = lt.loss_line(net, data, plane.origin, plane.u, [-1.0, 0.0, 1.0])
    assert line.loss[1] == pytest.approx(surface.loss[2, 2], rel=1e-5)
    with pytest.raises(ValueError, match=r"animate draws a Projection"):
        lt.animate(None, surface, tmp_path / "x.png")


def test_a_line_along_a_plane_or_flat_vectors_set_in_place_equals_the_flat_points(net_and_data, monkeypatch):
    import losstrail.evaluation.evaluator as evaluate

    net, data = net_and_data
    plane = lt.make_plane(net, "filter", seed=3)
    ts = np.linspace(-1, 1, 5)
    along = lt.loss_line(net, data, plane, "v", ts).loss  # in place, the plane's own tensors
    flat = lt.loss_line(net, data, plane.origin, plane.v, ts).loss  # flat points (a small model)
    monkeypatch.setattr(evaluate, "_MIN_CHUNK_MEMORY", 1)  # as if the model were too big for flat copies
    in_place = lt.loss_line(net, data, plane.origin, plane.v, ts).loss
    np.testing.assert_allclose(along, flat, rtol=0, atol=1e-6)
    np.testing.assert_allclose(in_place, flat, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match=r"direction='u' or direction='v'"):
        lt.loss_line(net, data, plane, "w", ts)


def test_path_points_of_a_big_model_set_in_place_equal_the_flat_evaluation(net_and_data, monkeypatch):
    import losstrail.evaluation.evaluator as evaluate
    from losstrail.evaluation.grids import evaluate_points

    net, data = net_and_data
    rng = np.random.default_rng(1)
    theta = np.concatenate([p.detach().reshape(-1).numpy() for p in net.parameters()])
    rows = (theta[None, :] + rng.normal(0, 0.02, (4, theta.size))).astype(np.float32)
    flat = evaluate_points(net, data, rows)
    before = _weights(net)
    monkeypatch.setattr(evaluate, "_MIN_CHUNK_MEMORY", 1)  # as if the model were too big for flat copies
    in_place = evaluate_points(net, data, rows)
    np.testing.assert_allclose(in_place[0], flat[0], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(in_place[1], flat[1])
    for n, t in _weights(net).items():
        assert torch.equal(t, before[n]), n


class _Tied(torch.nn.Module):
    """A tiny language model whose head shares the embedding's Parameter (as GPT-2's lm_head shares wte's)."""

    def __init__(self, outside: bool = False):
        super().__init__()
        self.emb = torch.nn.Embedding(11, 8)
        self.mix = torch.nn.Linear(8, 8)
        self.head = torch.nn.Linear(8, 11, bias=False)
        self.head.weight = self.emb.weight
        self.gain = torch.nn.Parameter(torch.ones(8))  # owned by the root: live for its whole forward
        self.outside = outside

    def forward(self, ids):
        h = torch.tanh(self.mix(self.emb(ids))) * self.gain
        if self.outside:  # the embedding's weight read by its parent, outside the embedding's own forward
            return torch.nn.functional.linear(h, self.emb.weight) + torch.nn.functional.linear(h, self.mix.weight).sum()
        return self.head(h)


def _plain_loop(model, ids, targets, plane, xs, ys) -> np.ndarray:
    """Each point written into a fresh copy's parameters (named once each, so a tied weight is written once)."""
    copy_ = copy.deepcopy(model)
    params = [p for _, p in copy_.named_parameters()]
    sizes = np.cumsum([p.numel() for p in params])[:-1]
    out = np.zeros((len(ys), len(xs)))
    for i, b in enumerate(ys):
        for j, a in enumerate(xs):
            flat = plane.origin + np.float32(a) * plane.u + np.float32(b) * plane.v
            with torch.no_grad():
                for p, piece in zip(params, np.split(flat, sizes)):
                    p.copy_(torch.from_numpy(piece.reshape(p.shape).copy()))
                logits = copy_.eval()(ids)
            out[i, j] = float(torch.nn.functional.cross_entropy(logits.reshape(-1, 11), targets.reshape(-1)))
    return out


@pytest.mark.parametrize("outside", [False, True])
def test_module_by_module_points_with_tied_weights_and_a_weight_read_outside_its_module(outside, capfd):
    torch.manual_seed(1)
    model = _Tied(outside)
    ids, targets = torch.randint(0, 11, (6, 5)), torch.randint(0, 11, (6, 5))
    plane = lt.make_plane(model, "filter", seed=3, keep_biases=True)
    xs, ys = np.linspace(-1, 1, 3), np.linspace(-0.5, 1, 3)
    before = _weights(model)

    def loss_fn(logits, t):
        return torch.nn.functional.cross_entropy(logits.reshape(-1, 11), t.reshape(-1))

    got = loss_surface(model, (ids, targets), plane, xs, ys, loss_fn=loss_fn, mode="inplace", quiet=True).loss
    np.testing.assert_allclose(got, _plain_loop(model, ids, targets, plane, xs, ys), rtol=0, atol=1e-6)
    note = capfd.readouterr().err
    # a weight read outside the forward of the module owning it is caught at the first point: a whole copy, with a note
    assert ("'emb.weight' is read outside the forward" in note) == outside, note
    for n, t in _weights(model).items():
        assert torch.equal(t, before[n]), n
    assert model.head.weight is model.emb.weight


def test_points_set_module_by_module_hold_one_module_at_a_time_and_equal_the_whole_copy(net_and_data):
    from losstrail.evaluation.inplace import points_in_place

    net, (X, _) = net_and_data
    for store in ("tensors", "seed"):
        plane = lt.make_plane(net, "layer", seed=7, keep_biases=True, store=store)
        original = {n: p.data_ptr() for n, p in net.named_parameters()}
        seen, spying = [], []

        def spy(module, args, output):  # while fc1 runs, every other layer holds the model's own tensor
            if spying:  # (not in the first, watched pass: reading .data there is a read outside the modules)
                seen.append({n: p.data_ptr() == original[n] for n, p in net.named_parameters()})

        handle = net.fc1.register_forward_hook(spy)
        outputs = {}
        try:
            for scheme in ("modules", "copy"):
                with points_in_place(net, plane.tensors, scheme=scheme) as at, torch.no_grad():
                    at(0.7, -0.3)
                    outputs[scheme] = at.checked(net, X)
                    spying.append(1)
                    at(-0.2, 0.4)
                    outputs[scheme + "2"] = at.checked(net, X)
                    spying.clear()
        finally:
            handle.remove()
        assert seen[0] == {"conv.weight": True, "conv.bias": True, "fc1.weight": False, "fc1.bias": False,
                           "fc2.weight": True, "fc2.bias": True}  # fmt: skip
        assert not any(seen[1].values())  # the whole copy: every parameter points at it
        for key in ("modules", "modules2"):
            assert torch.equal(outputs[key], outputs[key.replace("modules", "copy")])  # bit for bit
        assert all(net.get_parameter(n).data_ptr() == ptr for n, ptr in original.items())


def test_an_exception_inside_a_module_mid_grid_restores_the_weights_exactly(net_and_data):
    net, data = net_and_data
    plane = lt.make_plane(net, "filter", seed=2, store="seed")
    before = _weights(net)
    calls = []

    def fail(module, args, output):
        calls.append(1)
        if len(calls) == 4:  # the 3rd grid point (call 1 is the evaluator's check), inside fc1's set weights
            raise RuntimeError("fc1 failed")

    handle = net.fc1.register_forward_hook(fail)
    with pytest.raises(RuntimeError, match="fc1 failed"):
        loss_surface(net, data, plane, np.linspace(-1, 1, 3), [0.0], mode="inplace", quiet=True)
    handle.remove()
    for n, t in _weights(net).items():
        assert torch.equal(t, before[n]), n
    assert not net.fc1._forward_hooks and not net.fc1._forward_pre_hooks  # the grid's hooks are gone


def test_points_set_in_place_state_their_cost_from_the_points_after_the_first():
    """The first point carries the warm-up (here a 0.5 s stall); the cost is said from the pace after it."""
    import time

    from losstrail.evaluation.evaluator import Evaluator

    class StallsOnce(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer, self.stall = torch.nn.Linear(2, 3), False

        def forward(self, x):
            if self.stall:
                self.stall = False
                time.sleep(0.5)
            return self.layer(x)

    torch.manual_seed(0)
    model = StallsOnce()
    data = (torch.randn(16, 2), torch.randint(0, 3, (16,)))
    evaluator = Evaluator(model, data, mode="inplace")
    plane = lt.make_plane(model, "filter", seed=0)
    said: list[float] = []
    model.stall = True
    coords = np.stack([np.linspace(-1, 1, 12), np.zeros(12)], axis=1)
    result = evaluator.run_in_place(plane.tensors, coords, on_first_chunk=lambda seconds, points: said.append(seconds))
    assert said and said[0] < 0.5 / 2  # 0.5 s + 11 fast points over 12; the first point's 0.5 s alone was said before
    reference = lt.loss_surface(model, data, plane, coords[:, 0], [0.0], mode="loop")
    np.testing.assert_allclose(result.loss, reference.loss[0], rtol=1e-6)


def test_a_calls_warm_up_is_spread_over_the_points_that_follow_it_in_the_job():
    """A block of a grid (``more`` points follow) stalls 0.5 s on its first point: the grid's cost said from it is
    that stall once plus every point at the pace after it (1.14 s for 64 points here), not the block's time
    so far once per block (2.6 s: the first statement beside a CPU hog was 2.5-2.8x the actual time)."""
    import time

    from losstrail.evaluation.evaluator import Evaluator

    class Paced(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer, self.stall = torch.nn.Linear(2, 3), False

        def forward(self, x):
            time.sleep(0.5 if self.stall else 0.01)
            self.stall = False
            return self.layer(x)

    torch.manual_seed(0)
    model = Paced()
    data = (torch.randn(16, 2), torch.randint(0, 3, (16,)))
    evaluator = Evaluator(model, data, mode="loop")
    rows = torch.randn(16, sum(p.numel() for p in model.parameters()))
    said: list[float] = []
    model.stall = True  # the evaluator's own first look at the model ran it once
    result = evaluator.run(lambda sl: rows[sl], 16, chunk_size=4, more=48,
                           on_first_chunk=lambda seconds, points: said.append(seconds * 64 / points))  # fmt: skip
    assert said and 1.0 < said[0] < 1.7, said
    model.stall = False
    np.testing.assert_allclose(result.loss, Evaluator(model, data, mode="loop").run(lambda sl: rows[sl], 16).loss)
