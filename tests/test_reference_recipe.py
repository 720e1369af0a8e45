"""The reference README's "Custom Dataset and Model" recipe runs with only its imports changed.

``loss-landscape-anim`` 0.1.10 tells users to subclass ``model.GenericModel`` with their own
``training_step`` and ``loss_fn`` (as its ``MLP`` and ``LeNet`` do), write a DataModule like
its ``SpiralsDataModule``, and call ``loss_landscape_anim``. The code below is written that
way, line for line, with ``loss_landscape_anim`` in the imports replaced by ``losstrail``.
"""

import importlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from losstrail import loss_landscape_anim
from losstrail.datamodule import MNISTDataModule, SpiralsDataModule
from losstrail.model import MLP, GenericModel, LeNet

N_EPOCHS = 3
BATCH = 30
N_EXAMPLES = 120


def reference_recipe(pl):
    """``(YourDataModule, YourModel)`` written as the reference's datamodule.py and model.py show.

    ``pl`` is the Lightning namespace the user's code imports (``pytorch_lightning`` as in the
    reference, or ``lightning.pytorch``).
    """

    class BlobsDataModule(pl.LightningDataModule):
        """Three Gaussian blobs in 2-D, built as the reference's SpiralsDataModule (no super().__init__())."""

        def __init__(self, batch_size=None):
            g = torch.Generator().manual_seed(0)
            centres = torch.tensor([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])
            labels = torch.arange(N_EXAMPLES) % 3
            self.X = centres[labels] + 0.8 * torch.randn(N_EXAMPLES, 2, generator=g)
            self.y = torch.LongTensor(labels)
            self.input_dim = self.X.shape[1]
            self.num_classes = len(set(self.y.tolist()))
            self.dataset = TensorDataset(self.X, self.y)
            self.batch_size = batch_size if batch_size else len(self.X)

        # The reference's default is 7 workers; 2 keep the test light on a small machine.
        def train_dataloader(self, num_workers=2):
            return DataLoader(
                self.dataset,
                batch_size=self.batch_size,
                num_workers=num_workers,
                persistent_workers=True,
            )

    class TwoLayerNet(GenericModel):
        def __init__(self, learning_rate, num_classes=3, optimizer="adam", custom_optimizer=None, gpus=0):
            super().__init__(
                optimizer=optimizer,
                learning_rate=learning_rate,
                custom_optimizer=custom_optimizer,
                gpus=gpus,
                num_classes=num_classes,
            )
            self.layers = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, num_classes))

        def forward(self, x_in, apply_softmax=False):
            y_pred = self.layers(x_in)
            if apply_softmax:
                y_pred = F.softmax(y_pred, dim=1)
            return y_pred

        def loss_fn(self, y_pred, y):
            return F.cross_entropy(y_pred, y)

        def training_step(self, batch, batch_idx):
            X, y = batch
            y_pred = self(X)
            # Get model weights flattened here to append to optim_path later
            flat_w = self.get_flat_params()
            loss = self.loss_fn(y_pred, y)

            preds = y_pred.max(dim=1)[1]  # class
            accuracy = self.accuracy(preds, y)

            self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, logger=True)
            self.log("train_acc", accuracy, on_step=False, on_epoch=True, prog_bar=True, logger=True)
            self.training_step_outputs.append({"loss": loss, "accuracy": accuracy, "flat_w": flat_w})
            return {"loss": loss, "accuracy": accuracy, "flat_w": flat_w}

        def on_train_epoch_end(self):
            # Only record the last step in each epoch
            self.optim_path.append(self.training_step_outputs[-1])

    return BlobsDataModule, TwoLayerNet


@pytest.mark.parametrize("namespace", ["pytorch_lightning", "lightning.pytorch"])
def test_the_readme_custom_model_recipe_runs_unchanged(tmp_path, namespace):
    pl = pytest.importorskip(namespace)
    YourDataModule, YourModel = reference_recipe(pl)
    SEED = 7
    bs = BATCH
    lr = 1e-2
    torch.manual_seed(SEED)
    datamodule = YourDataModule(batch_size=bs)
    model = YourModel(learning_rate=lr)
    gif = tmp_path / "recipe.gif"

    optim_path, loss_steps, accu_steps = loss_landscape_anim(
        n_epochs=N_EPOCHS,
        model=model,
        datamodule=datamodule,
        optimizer="adam",
        seed=SEED,
        load_model=False,
        output_to_file=True,
        output_filename=str(gif),
        model_dirpath=str(tmp_path / "checkpoints") + "/",
        giffps=5,
        n_frames=6,
        return_data=True,
        resolution=12,
        quiet=True,
    )

    n_steps = N_EPOCHS * (N_EXAMPLES // BATCH)
    n_params = sum(p.numel() for p in model.parameters())
    with Image.open(gif) as image:
        assert image.n_frames == 6
    # losstrail records every step and the final parameters; the model kept its own record as in the reference.
    assert len(optim_path) == len(loss_steps) == len(accu_steps) == n_steps + 1
    assert all(tuple(w.shape) == (n_params,) for w in optim_path)
    assert np.isfinite(loss_steps).all() and ((np.array(accu_steps) >= 0) & (np.array(accu_steps) <= 1)).all()
    assert len(model.training_step_outputs) == n_steps
    assert len(model.optim_path) == N_EPOCHS
    # What losstrail recorded at step k is what the user's training_step saw at step k.
    for k, out in enumerate(model.training_step_outputs):
        assert torch.equal(optim_path[k], out["flat_w"])
        assert loss_steps[k] == pytest.approx(float(out["loss"].detach()), rel=1e-6)
        assert accu_steps[k] == pytest.approx(float(out["accuracy"]), rel=1e-6)
    assert torch.equal(optim_path[-1], model.get_flat_params())
    assert loss_steps[-1] < loss_steps[0]

    # load_model=True, as the reference offered, redraws from the saved run without training.
    again = loss_landscape_anim(
        n_epochs=N_EPOCHS,
        model=YourModel(learning_rate=lr),
        datamodule=datamodule,
        seed=SEED,
        load_model=True,
        output_filename=str(tmp_path / "again.gif"),
        model_dirpath=str(tmp_path / "checkpoints") + "/",
        n_frames=6,
        return_data=True,
        resolution=12,
        quiet=True,
    )
    assert all(torch.equal(a, b) for a, b in zip(again[0], optim_path)) and again[1] == loss_steps


# The four ways the recipe failed, one at a time.


def test_the_reference_module_names_exist():
    import losstrail

    model_module = importlib.import_module("losstrail.model")
    datamodule_module = importlib.import_module("losstrail.datamodule")
    assert model_module.GenericModel is losstrail.GenericModel
    assert {"GenericModel", "MLP", "LeNet"} <= set(model_module.__all__)
    assert datamodule_module.SpiralsDataModule is losstrail.SpiralsDataModule
    assert datamodule_module.MNISTDataModule is losstrail.MNISTDataModule


def test_generic_model_takes_the_reference_arguments():
    by_name = GenericModel(optimizer="sgd", learning_rate=0.1, custom_optimizer=None, gpus=0, num_classes=4)
    by_position = GenericModel("sgd", 0.1, None, 0, 4)  # the reference's order
    for model in (by_name, by_position):
        assert (model.optimizer, model.learning_rate, model.gpus, model.accuracy.num_classes) == ("sgd", 0.1, 0, 4)
    assert GenericModel("adam", 1e-3).accuracy.num_classes == 10  # the reference's default


def test_self_accuracy_scores_as_torchmetrics_does():
    torchmetrics = pytest.importorskip("torchmetrics")
    ours = GenericModel("adam", 1e-3, num_classes=5).accuracy
    theirs = torchmetrics.Accuracy(task="multiclass", num_classes=5)
    g = torch.Generator().manual_seed(0)
    for n in (7, 16, 3):
        logits, y = torch.randn(n, 5, generator=g), torch.randint(0, 5, (n,), generator=g)
        preds = logits.max(dim=1)[1]
        assert torch.allclose(ours(preds, y), theirs(preds, y))  # class indices, as the reference's models pass
        assert torch.allclose(ours(logits, y), theirs(logits, y))  # or the scores themselves
    assert torch.allclose(ours.compute(), theirs.compute())
    ours.reset()
    assert torch.isnan(ours.compute())


def test_self_accuracy_adds_nothing_to_the_weights(tiny_model):
    names = [name for name, _ in tiny_model.named_parameters()]
    assert not any(name.startswith("accuracy") for name in names)
    assert not any(key.startswith("accuracy") for key in tiny_model.state_dict())
    assert tiny_model.get_flat_params().numel() == 27


def test_self_accuracy_names_bad_input():
    accuracy = GenericModel("adam", 1e-3, num_classes=3).accuracy
    with pytest.raises(ValueError, match=r"shape \(4,\) and targets of shape \(5,\)"):
        accuracy(torch.zeros(4, dtype=torch.long), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"scores of shape \(4, 2\) for num_classes=3"):
        accuracy(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"num_classes='ten' must be a positive integer"):
        GenericModel("adam", 1e-3, num_classes="ten")


def test_training_step_outputs_is_a_fresh_list_per_model():
    first, second = GenericModel("adam", 1e-3), GenericModel("adam", 1e-3)
    assert first.training_step_outputs == [] and first.optim_path == []
    first.training_step_outputs.append({"loss": torch.tensor(1.0)})
    assert second.training_step_outputs == []


# The reference's own models and data modules, by the reference's signatures.


def test_reference_mlp_and_lenet_take_the_reference_argument_order():
    mlp = MLP(2, 3, 0.02, 2, 7)  # input_dim, num_classes, learning_rate, num_hidden_layers, hidden_dim
    assert mlp.learning_rate == 0.02 and mlp.accuracy.num_classes == 3
    assert [tuple(p.shape) for p in mlp.parameters()] == [(7, 2), (7,), (7, 7), (7,), (3, 7), (3,)]
    x = torch.randn(5, 2)
    assert torch.allclose(mlp(x, apply_softmax=True), F.softmax(mlp(x), dim=1))
    lenet = LeNet(1e-3, 10)  # learning_rate, num_classes
    assert lenet.learning_rate == 1e-3 and lenet(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_reference_datamodule_attributes():
    datamodule = SpiralsDataModule(batch_size=100)
    X, y = datamodule.dataset.tensors
    assert torch.equal(datamodule.X, X) and torch.equal(datamodule.y, y)
    assert (datamodule.input_dim, datamodule.num_classes, datamodule.batch_size) == (2, 3, 100)
    batches = list(datamodule.train_dataloader(num_workers=0))  # the reference passed num_workers here
    assert sum(len(b[1]) for b in batches) == len(y)
    assert MNISTDataModule.input_dim == (1, 28, 28) and MNISTDataModule.num_classes == 10
