"""Recorder, Lightning's TrajectoryRecorder (through fit) and the Hugging Face LosstrailCallback agree on the
final point: labelled with the last epoch trained, and its loss measured, for dict batches as for tuples."""

import numpy as np
import pytest
import torch

import losstrail as lt

EPOCHS = 3


def test_recorder_labels_the_final_point_with_the_last_epoch(tiny_data):
    X, y = tiny_data
    model = torch.nn.Linear(2, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = lt.Recorder(model)
    for epoch in range(EPOCHS):
        for half in (slice(0, 32), slice(32, 64)):
            loss = torch.nn.functional.cross_entropy(model(X[half]), y[half])
            opt.zero_grad()
            loss.backward()
            opt.step()
            rec.record(loss=loss, epoch=epoch)
    t = rec.trajectory
    assert t.epoch.tolist() == [0, 0, 1, 1, 2, 2, 2]


class _DictModel(torch.nn.Module):
    """Takes a dict batch and returns an object with ``.loss``, as Hugging Face models do."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 3)

    def forward(self, x, labels=None):
        logits = self.linear(x)
        out = type("Out", (), {})()
        out.logits, out.loss = logits, torch.nn.functional.cross_entropy(logits, labels)
        return out


@pytest.mark.parametrize("batch", ["tuple", "dict"])
def test_fit_measures_the_final_loss_and_labels_the_last_epoch(tiny_data, batch):
    X, y = tiny_data
    torch.manual_seed(0)
    model = _DictModel() if batch == "dict" else torch.nn.Linear(2, 3)
    data = {"x": X, "labels": y} if batch == "dict" else (X, y)
    run = lt.fit(model, data, optimizer="sgd", learning_rate=0.1, epochs=EPOCHS, seed=0, quiet=True)
    t = run.trajectory
    assert t.step.tolist() == [0, 1, 2, 3]  # one full batch an epoch
    assert t.epoch.tolist() == [0, 1, 2, 2]
    with torch.no_grad():  # the loss at the final parameters on the (one, whole) batch of the last epoch
        logits = model.linear(X) if batch == "dict" else model(X)
        expected = float(torch.nn.functional.cross_entropy(logits, y))
    assert t.loss[-1] == pytest.approx(expected, rel=1e-5)


def test_lightning_recorder_labels_the_last_epoch_trained(tiny_data):
    import lightning.pytorch as pl

    from losstrail.builtin.models import MLP

    X, y = tiny_data
    pl.seed_everything(0, verbose=False)
    model = MLP(input_dim=2, num_classes=3, hidden_dim=4)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=32)
    rec = lt.TrajectoryRecorder()
    pl.Trainer(max_epochs=EPOCHS, callbacks=[rec], logger=False, enable_progress_bar=False, enable_checkpointing=False,
               enable_model_summary=False, accelerator="cpu").fit(model, loader)  # fmt: skip
    t = rec.trajectory
    assert t.epoch.tolist() == [0, 0, 1, 1, 2, 2, 2] and np.isfinite(t.loss).all()


def test_hugging_face_callback_measures_the_final_loss(tmp_path):
    transformers = pytest.importorskip("transformers")
    from test_integrations import Corpus, N, tiny_gpt2

    model = tiny_gpt2()
    callback = lt.LosstrailCallback()
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), num_train_epochs=EPOCHS, per_device_train_batch_size=N, learning_rate=1e-2,
        report_to=[], use_cpu=True, save_strategy="no", logging_steps=1, disable_tqdm=True, seed=0,
    )  # fmt: skip
    transformers.Trainer(model=model, args=args, train_dataset=Corpus(), callbacks=[callback]).train()
    t = callback.trajectory
    assert t.epoch.tolist() == [0, 1, 2, 2]
    model.train()
    with torch.no_grad():  # the whole corpus is the one batch of the last epoch
        expected = float(model(**Corpus().batch()).loss)
    assert t.loss[-1] == pytest.approx(expected, rel=1e-5)
