"""LosstrailCallback records Trainer.train() as a trajectory, checked against the model re-run at each point."""

import copy
import subprocess
import sys

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from losstrail import LosstrailCallback, make_plane, project  # noqa: E402
from losstrail.evaluation.layout import ParamLayout  # noqa: E402

N, T, VOCAB = 8, 12, 32


def tiny_gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=T, n_embd=16, n_layer=2, n_head=2,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(config)


class Corpus(torch.utils.data.Dataset):
    """N short token sequences with a pattern (each token the previous plus one), the last two padded."""

    def __init__(self):
        g = torch.Generator().manual_seed(1)
        start = torch.randint(0, VOCAB, (N, 1), generator=g)
        self.ids = (start + torch.arange(T)) % VOCAB
        self.mask = torch.ones(N, T, dtype=torch.long)
        self.mask[-2:, -3:] = 0
        self.labels = self.ids.masked_fill(self.mask == 0, -100)

    def __len__(self):
        return N

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": self.mask[i], "labels": self.labels[i]}

    def batch(self):
        return {"input_ids": self.ids, "attention_mask": self.mask, "labels": self.labels}


def train(tmp_path, model, callback, steps=5, accumulation=1):
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=steps, per_device_train_batch_size=N // accumulation,
        gradient_accumulation_steps=accumulation, learning_rate=1e-2, report_to=[], use_cpu=True,
        save_strategy="no", logging_steps=1, disable_tqdm=True, seed=0,
    )  # fmt: skip
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Corpus(), callbacks=[callback])
    trainer.train()
    return trainer


def loss_at(model, names, row, batch) -> float:
    """The loss of a copy of ``model`` with the recorded ``row`` loaded, in training mode (no dropout here)."""
    twin = copy.deepcopy(model)
    state = twin.state_dict()
    for name, value in ParamLayout(model, names).unflatten(torch.from_numpy(np.asarray(row, np.float32))).items():
        state[name] = value
    twin.load_state_dict(state)
    twin.train()
    with torch.no_grad():
        return float(twin(**batch).loss)


def test_callback_records_every_step_with_the_loss_at_its_start(tmp_path):
    model = tiny_gpt2()
    callback = LosstrailCallback()
    train(tmp_path, model, callback, steps=5)
    t = callback.trajectory
    names = [n for n, _ in model.named_parameters()]
    assert len(t) == 6 and t.step.tolist() == [0, 1, 2, 3, 4, 5]
    assert t.n_params == sum(p.numel() for p in model.parameters())
    # the last point is the trained model; each loss is the full batch's loss at that point
    np.testing.assert_array_equal(t.params[-1], ParamLayout(model).flatten(model).numpy())
    batch = Corpus().batch()
    expected = [loss_at(model, names, t.params[k], batch) for k in range(5)]
    np.testing.assert_allclose(t.loss[:5], expected, rtol=1e-5)
    # the final point's loss is measured too, on the first batch of the last epoch (here the whole corpus)
    assert t.loss[-1] == pytest.approx(loss_at(model, names, t.params[-1], batch), rel=1e-5)
    assert np.isnan(t.accuracy).all()
    assert t.loss[4] < t.loss[0]  # it trained
    plane = make_plane(t, "pca")
    assert project(plane, t).xy.shape == (6, 2)


def test_callback_every_and_accumulation_and_subset(tmp_path):
    model = tiny_gpt2()
    start = copy.deepcopy(model)
    callback = LosstrailCallback(every=2, params=["transformer.h.1.*"])
    train(tmp_path, model, callback, steps=4, accumulation=2)
    t = callback.trajectory
    chosen = [n for n, _ in model.named_parameters() if n.startswith("transformer.h.1.")]
    assert t.step.tolist() == [0, 2, 4] and list(t.names) == chosen
    assert t.n_params == sum(dict(model.named_parameters())[n].numel() for n in chosen)
    np.testing.assert_array_equal(t.params[0], ParamLayout(start, chosen).flatten(start).numpy())
    # a step is two micro-batches of four sequences; its loss is the loss over all eight tokens-wise
    with torch.no_grad():
        expected = float(start(**Corpus().batch()).loss)
    np.testing.assert_allclose(t.loss[0], expected, rtol=1e-5)


def test_callback_records_only_a_lora_adapter(tmp_path):
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(tiny_gpt2(), peft.LoraConfig(r=2, target_modules=["c_attn"], lora_alpha=4))
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    callback = LosstrailCallback()
    train(tmp_path, model, callback, steps=3)
    t = callback.trajectory
    adapter = [n for n, p in model.named_parameters() if p.requires_grad]
    assert adapter and all("lora_" in n for n in adapter) and list(t.names) == adapter
    assert t.n_params == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert not np.allclose(t.params[0], t.params[-1])  # the adapter moved
    for name, p in model.named_parameters():
        if name in frozen:
            assert torch.equal(p, frozen[name]), name


def test_callback_checks_its_arguments_before_training():
    with pytest.raises(ValueError, match=r"every=0 must be a positive integer"):
        LosstrailCallback(every=0)
    with pytest.raises(ValueError, match=r"dtype='float64' is not supported"):
        LosstrailCallback(dtype="float64")
    with pytest.raises(RuntimeError, match=r"nothing was recorded yet"):
        _ = LosstrailCallback().trajectory


def test_importing_losstrail_does_not_import_transformers():
    code = "import sys, losstrail; losstrail.Recorder; assert 'transformers' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
