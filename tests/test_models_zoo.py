"""Real kinds of model through the whole pipeline: record -> plane -> project -> surface -> animate.

Each grid is checked against an independent plain loop: a copy of the model, each point's
weights loaded with ``load_state_dict`` (the point's values for the plane's parameters, the
original for everything else), called as a user would, in eval mode under no_grad.
"""

import copy
import pathlib
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from losstrail import Recorder, animate, fit, loss_surface, make_plane, project
from losstrail.evaluation.layout import ParamLayout

transformers = pytest.importorskip("transformers")

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "examples"))
from resnet import ResNet18  # noqa: E402

XS, YS = np.linspace(-1.0, 1.0, 4), np.linspace(-0.5, 1.0, 3)


# -- the independent reference ---------------------------------------------------------------------
def point_state(model, plane, x, y):
    """The full state dict at plane point (x, y): the plane's parameters moved, every other entry the original's."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    layout = ParamLayout(model, plane.names)
    values = layout.unflatten(torch.from_numpy(plane.point(x, y)))
    params = dict(model.named_parameters())
    moved = set()
    for key, tensor in model.state_dict(keep_vars=True).items():
        # a tied weight (GPT-2's lm_head.weight is transformer.wte.weight) appears under each of its names
        owner = next((n for n in values if params[n] is tensor), None)
        if owner is not None:
            state[key] = values[owner].to(state[key].dtype)
            moved.add(key)
    assert set(values) <= moved
    return state, moved


def loop_grid(model, batches, plane, loss, bn_batches=0):
    """Mean loss over ``batches`` (weighted by their length) at each grid point, by load_state_dict."""
    twin = copy.deepcopy(model)
    grid = np.empty((len(YS), len(XS)))
    for i, y in enumerate(YS):
        for j, x in enumerate(XS):
            state, _ = point_state(model, plane, x, y)
            twin.load_state_dict(state)
            if bn_batches:  # recompute BatchNorm statistics at this point, as a user would
                for m in twin.modules():
                    if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                        m.reset_running_stats()
                        m.momentum = None  # a cumulative average over the batches
                twin.train()
                with torch.no_grad():
                    for batch in batches[:bn_batches]:
                        loss(twin, batch)
            twin.eval()
            with torch.no_grad():
                total = sum(float(loss(twin, b)) * length(b) for b in batches)
            grid[i, j] = total / sum(length(b) for b in batches)
    return grid


def length(batch):
    first = batch["input_ids"] if isinstance(batch, dict) else batch[-1]
    return len(first)


def check_gif(out, projection):
    assert out.exists()
    with Image.open(out) as gif:
        assert gif.n_frames >= 2
        frame = np.asarray(gif.convert("RGB"))
        assert frame.std() > 10  # a picture, not a blank frame


def run_pipeline(model, data, trajectory, plane, tmp_path, batch_size=4096, draw=True, **options):
    projection = project(plane, trajectory, model=model, data=data, **options)
    surface = loss_surface(model, data, plane, XS, YS, batch_size=batch_size, quiet=True, **options)
    if draw:
        out = tmp_path / f"{plane.method}.gif"
        animate(projection, surface, out, max_frames=3, quiet=True, size=(480, 320))
        check_gif(out, projection)
    return projection, surface


# -- (a) and (b): GPT-2 with dict batches, with and without a LoRA adapter ---------------------------
N, T, VOCAB = 8, 8, 16


def tiny_gpt2(attention="sdpa"):
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=T, n_embd=8, n_layer=1, n_head=2,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    config._attn_implementation = attention
    return transformers.GPT2LMHeadModel(config)


def corpus():
    g = torch.Generator().manual_seed(1)
    ids = (torch.randint(0, VOCAB, (N, 1), generator=g) + torch.arange(T)) % VOCAB
    mask = torch.ones(N, T, dtype=torch.long)
    mask[-2:, -3:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def train_with_recorder(model, data, steps, lr, params="trainable"):
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    recorder = Recorder(model, params=params)
    model.train()
    for _ in range(steps):
        loss = model(**data).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        recorder.record(loss=loss)
    return recorder.trajectory


def hf_loss(model, batch):
    return model(**batch).loss


@pytest.mark.parametrize(("attention", "methods"), [("sdpa", ("pca",)), ("eager", ("hessian",))])
def test_gpt2_with_dict_batches(tmp_path, attention, methods):
    model, data = tiny_gpt2(attention), corpus()
    trajectory = train_with_recorder(model, data, steps=6, lr=3e-2)
    assert trajectory.names is None and trajectory.loss[5] < trajectory.loss[0]
    batches = [{k: v[:6] for k, v in data.items()}, {k: v[6:] for k, v in data.items()}]
    for method in methods:
        plane = make_plane(trajectory, method, model=model, data=data, seed=0, hessian_examples=4)
        projection, surface = run_pipeline(model, data, trajectory, plane, tmp_path, batch_size=6)
        np.testing.assert_allclose(surface.loss, loop_grid(model, batches, plane, hf_loss), rtol=2e-5)
        assert np.isnan(surface.accuracy).all()
    # the true loss at the last point is the trained model's own loss
    with torch.no_grad():
        model.eval()
        assert projection.true_loss[-1] == pytest.approx(float(model(**data).loss), rel=1e-5)
    if plane.eigenvalues is not None:
        assert plane.eigenvalues[0] >= plane.eigenvalues[1]


def test_hessian_of_gpt2_with_default_sdpa_attention_equals_eager_attention():
    """Fused attention has no forward-mode or second derivative; the products run it as plain ops."""
    from losstrail import hessian_eigenpairs
    from losstrail.evaluation.layout import flat_params

    data = corpus()
    sdpa = tiny_gpt2("sdpa")
    train_with_recorder(sdpa, data, steps=2, lr=3e-2)
    eager = tiny_gpt2("eager")
    eager.load_state_dict(sdpa.state_dict())
    theta = flat_params(sdpa).numpy()
    fused = hessian_eigenpairs(sdpa, data, theta, seed=0, quiet=True)
    plain = hessian_eigenpairs(eager, data, theta, seed=0, quiet=True)
    assert fused.product == "forward-over-reverse"
    np.testing.assert_allclose(fused.values, plain.values, rtol=1e-4)


def test_gpt2_lora_adapter_only(tmp_path):
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(tiny_gpt2(), peft.LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn"]))
    data = corpus()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trajectory = train_with_recorder(model, data, steps=6, lr=5e-2)
    adapter = [n for n, p in model.named_parameters() if p.requires_grad]
    n_adapter = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert list(trajectory.names) == adapter and all("lora_" in n for n in adapter)
    assert trajectory.n_params == n_adapter < sum(p.numel() for p in model.parameters()) // 4
    for method in ("pca", "filter"):
        plane = make_plane(trajectory, method, model=model, seed=0)
        assert plane.u.shape == plane.v.shape == plane.origin.shape == (n_adapter,)
        assert list(plane.names) == adapter
        projection, surface = run_pipeline(model, data, trajectory, plane, tmp_path, draw=method == "pca")
        np.testing.assert_allclose(surface.loss, loop_grid(model, [data], plane, hf_loss), rtol=2e-5)
    # training moved only the adapter: every frozen tensor is the one the model started with
    for name, value in model.state_dict().items():
        if "lora_" not in name:
            assert torch.equal(value, before[name]), name
    # at every grid point the loop's state dicts hold the frozen tensors bit for bit, and the adapter's point
    for x in XS:
        for y in YS:
            state, moved = point_state(model, plane, x, y)
            assert moved == set(adapter)  # no adapter weight is tied to another
            for name, value in model.state_dict().items():
                if name not in moved:
                    assert torch.equal(state[name], value), name
    # and so does losstrail's own evaluation: an objective that counts, at each grid point, the frozen
    # elements that differ from the model's own and the adapter elements that differ from the point
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    layout = ParamLayout(model, adapter)

    def counting(m, batch):
        params = dict(m.named_parameters())
        drift = sum((params[n] != v).sum() for n, v in frozen.items())
        here = torch.cat([params[n].reshape(-1) for n in layout.names])
        return m(**batch).loss, {"frozen_changed": drift.float(), "adapter": here.sum()}

    for mode in ("vmap", "loop"):
        surface = loss_surface(model, data, plane, XS, YS, objective=counting, mode=mode, quiet=True)
        np.testing.assert_allclose(surface.loss, loop_grid(model, [data], plane, hf_loss), rtol=2e-5)
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)


# -- (c) a ResNet with BatchNorm on CIFAR-shaped images ------------------------------------------------
def test_resnet_batchnorm_filter_plane_and_bn_batches(tmp_path):
    torch.manual_seed(0)
    model = ResNet18(num_classes=10, width=4)
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(16, 3, 32, 32, generator=g), torch.randint(0, 10, (16,), generator=g)
    run = fit(model, (X, y), epochs=3, seed=0, learning_rate=1e-2, quiet=True)
    trajectory = run.trajectory
    assert trajectory.n_params == sum(p.numel() for p in model.parameters())
    plane = make_plane(trajectory, "filter", model=model, seed=0)
    # filter normalization: each conv filter of u has the norm of the centre's filter
    layout = ParamLayout(model, plane.names)
    for u, w in zip(layout.split(plane.u), layout.split(plane.origin)):
        if u.ndim == 4:
            norms = [np.linalg.norm(t.reshape(len(t), -1), axis=1) for t in (u, w)]
            np.testing.assert_allclose(*norms, rtol=1e-4)
    data = (X, y)
    projection, surface = run_pipeline(model, data, trajectory, plane, tmp_path, bn_batches=2, batch_size=8)
    batches = [(X[:8], y[:8]), (X[8:], y[8:])]
    expected = loop_grid(model, batches, plane, lambda m, b: F.cross_entropy(m(b[0]), b[1]), bn_batches=2)
    np.testing.assert_allclose(surface.loss, expected, rtol=1e-4)
    assert np.isfinite(surface.accuracy).all()
    # with the running statistics (bn_batches=0) the loop agrees too, and the numbers differ
    plain = loss_surface(model, data, plane, XS, YS, batch_size=8, quiet=True)
    np.testing.assert_allclose(
        plain.loss, loop_grid(model, batches, plane, lambda m, b: F.cross_entropy(m(b[0]), b[1])), rtol=1e-4
    )
    assert not np.allclose(plain.loss, surface.loss)


def test_resnet_has_torchvisions_layout():
    # torchvision 0.28's resnet18(num_classes=10) has 11,181,642 parameters and 62 parameter tensors
    model = ResNet18(num_classes=10)
    assert sum(p.numel() for p in model.parameters()) == 11_181_642
    assert len(list(model.parameters())) == 62
    assert "layer2.0.downsample.1.running_var" in model.state_dict()


# -- (d) regression with a mean-squared error -------------------------------------------------------
def test_regression_mlp_with_mse(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    g = torch.Generator().manual_seed(0)
    X = torch.randn(64, 3, generator=g)
    y = (X[:, :1] * 2 - X[:, 1:2].sin()) + 0.1 * torch.randn(64, 1, generator=g)
    run = fit(model, (X, y), epochs=6, seed=0, learning_rate=3e-2, loss_fn=F.mse_loss, quiet=True)
    trajectory = run.trajectory
    assert np.isnan(trajectory.accuracy).all()
    for method in ("pca", "hessian"):
        plane = make_plane(trajectory, method, model=model, data=(X, y), loss_fn=F.mse_loss, seed=0)
        projection, surface = run_pipeline(
            model, (X, y), trajectory, plane, tmp_path, draw=method == "pca", loss_fn=F.mse_loss
        )
        expected = loop_grid(model, [(X, y)], plane, lambda m, b: F.mse_loss(m(b[0]), b[1]))
        np.testing.assert_allclose(surface.loss, expected, rtol=1e-5)
        assert np.isnan(surface.accuracy).all() and surface.loss.min() > 0


def test_regression_without_a_loss_is_refused_before_work():
    model = torch.nn.Linear(3, 1)
    P = 4
    from losstrail import Plane

    plane = Plane(np.zeros(P, np.float32), np.eye(P, dtype=np.float32)[0], np.eye(P, dtype=np.float32)[1], "custom")
    with pytest.raises(ValueError, match=r"pass loss_fn=torch.nn.functional.mse_loss"):
        loss_surface(model, (torch.randn(8, 3), torch.randn(8, 1)), plane, XS, YS, quiet=True)


# -- (e) a model whose forward takes two inputs -----------------------------------------------------
class TwoInputs(torch.nn.Module):
    """Scores a pair (a 5-vector and a 3-vector) into 4 classes."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(5, 8)
        self.b = torch.nn.Linear(3, 8)
        self.head = torch.nn.Linear(8, 4)

    def forward(self, xa, xb):
        return self.head(torch.relu(self.a(xa) + self.b(xb)))


def test_model_with_two_inputs(tmp_path):
    torch.manual_seed(0)
    model = TwoInputs()
    g = torch.Generator().manual_seed(0)
    xa, xb = torch.randn(48, 5, generator=g), torch.randn(48, 3, generator=g)
    y = ((xa[:, 0] > 0).long() * 2 + (xb[:, 0] > 0).long()).clamp(max=3)
    data = ((xa, xb), y)
    run = fit(model, data, epochs=5, seed=0, learning_rate=3e-2, quiet=True)
    trajectory = run.trajectory
    assert np.isfinite(trajectory.accuracy).all()
    for method in ("pca", "layer", "hessian"):
        plane = make_plane(trajectory, method, model=model, data=data, seed=0)
        projection, surface = run_pipeline(model, data, trajectory, plane, tmp_path, draw=method == "layer")
        expected = loop_grid(model, [((xa, xb), y)], plane, lambda m, b: F.cross_entropy(m(*b[0]), b[1]))
        np.testing.assert_allclose(surface.loss, expected, rtol=1e-5)
        assert np.isfinite(surface.accuracy).all()
