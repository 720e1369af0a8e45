"""Any model, any loop: plain modules through fit, and a hand-written loop with Recorder."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from losstrail import Recorder, fit
from losstrail.builtin.models import MLP


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(2, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3))


def test_recorder_in_a_hand_written_loop_equals_fit(tiny_data):
    X, y = tiny_data
    ref = fit(_net(), (X, y), loss_fn=F.cross_entropy, optimizer="sgd", learning_rate=0.3, epochs=5, quiet=True)
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    rec = Recorder(model)
    for _ in range(5):  # whole-batch steps, as fit takes them on (X, y)
        loss = F.cross_entropy(model(X), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        rec.record(loss=loss)
    mine = rec.trajectory
    np.testing.assert_allclose(mine.params, ref.trajectory.params, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(mine.loss[:-1], ref.trajectory.loss[:-1], rtol=1e-6)
    assert mine.step.tolist() == ref.trajectory.step.tolist() == [0, 1, 2, 3, 4, 5]


def test_recorder_keeps_every_kth_step():
    model = torch.nn.Linear(2, 1)
    rec = Recorder(model, every=3)
    for k in range(7):
        with torch.no_grad():
            model.weight += 1.0
        rec.record(loss=float(k))
    t = rec.trajectory
    assert t.step.tolist() == [0, 3, 6, 7] and t.loss[:3].tolist() == [0.0, 3.0, 6.0]
    assert t.params[1, 0] == pytest.approx(t.params[0, 0] + 3)


def test_plain_module_defaults_to_cross_entropy_only_for_class_logits(tiny_data):
    X, y = tiny_data
    run = fit(_net(), tiny_data, epochs=2, quiet=True)  # logits and labels: cross-entropy, with accuracy
    assert np.isfinite(run.trajectory.accuracy).all()
    with pytest.raises(ValueError, match=r"not class logits and labels.*pass loss_fn=torch.nn.functional.mse_loss"):
        fit(_net(), (X, X[:, :1].repeat(1, 3)), epochs=1, quiet=True)  # float targets: no silent cross-entropy
    triples = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y, y))
    with pytest.raises(ValueError, match=r"a TensorDataset|of 3.*model\(x1, x2\).*objective="):
        fit(_net(), triples, loss_fn=F.cross_entropy, epochs=1, quiet=True)


def test_plain_module_trains_on_a_dataloader(tiny_data):
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*tiny_data), batch_size=16)
    model = _net()
    run = fit(model, loader, loss_fn=F.cross_entropy, epochs=2, quiet=True)
    assert run.model is model and len(run.trajectory) == 9  # 2 epochs x 4 batches + the end
    assert np.isfinite(run.trajectory.loss[:-1]).all() and not np.allclose(
        run.trajectory.params[0], run.trajectory.params[-1]
    )
    assert isinstance(MLP(2, 3), torch.nn.Module)


def test_a_module_from_the_older_pytorch_lightning_namespace(tiny_data, tmp_path):
    old = pytest.importorskip("pytorch_lightning")

    class OldStyle(old.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = _net()

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.cross_entropy(self(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.3)

    run = fit(OldStyle(), tiny_data, epochs=3, quiet=True)
    reference = fit(
        _net(), tiny_data, loss_fn=F.cross_entropy, optimizer="sgd", learning_rate=0.3, epochs=3, quiet=True
    )
    np.testing.assert_allclose(run.trajectory.params, reference.trajectory.params, rtol=1e-6, atol=1e-7)
    import losstrail

    out = losstrail.loss_landscape_anim(
        n_epochs=2, model=OldStyle(), datamodule=None, model_dirpath=tmp_path / "r",
        output_filename=tmp_path / "o.gif", resolution=4, n_frames=2, quiet=True,
    )  # fmt: skip
    assert out.frames == 2
