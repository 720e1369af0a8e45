"""load_trajectory reads checkpoints written by real writers (torch.save, safetensors, Lightning's ModelCheckpoint,
a transformers Trainer) back as the very weights a recorder saw at those steps in the same run."""

import pickle

import numpy as np
import pytest
import torch

import losstrail as lt


def _train_plain(tmp_path, save, steps=6, every=2):
    """A tiny model trained with Recorder; ``save(model, step)`` writes a checkpoint every ``every`` steps."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    rec = lt.Recorder(model)
    X, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
    save(model, 0)
    for k in range(1, steps + 1):
        loss = torch.nn.functional.cross_entropy(model(X), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        rec.record(loss=loss)
        if k % every == 0:
            save(model, k)
    return model, rec.trajectory


def _rows_at(trajectory, steps):
    index = [int(np.flatnonzero(trajectory.step == s)[0]) for s in steps]
    return np.asarray(trajectory.params[index])


def test_torch_save_state_dicts_load_bit_for_bit(tmp_path):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    model, recorded = _train_plain(tmp_path, lambda m, k: torch.save(m.state_dict(), folder / f"step_{k}.pt"))
    (folder / "optimizer.pt").write_bytes(b"not weights")  # a trainer's other file is left alone
    t = lt.load_trajectory(folder, model, quiet=True)
    assert t.step.tolist() == [0, 2, 4, 6]
    np.testing.assert_array_equal(t.params, _rows_at(recorded, [0, 2, 4, 6]))
    assert t.names is None  # all of the model's parameters, as a recorder with params="all" says
    assert np.isnan(t.loss).all() and (t.epoch == -1).all()  # a plain state dict records neither


def test_safetensors_load_bit_for_bit_and_every(tmp_path):
    from safetensors.torch import save_file

    folder = tmp_path / "st"
    folder.mkdir()

    def save(m, k):
        save_file(
            {n: p.detach().contiguous() for n, p in m.state_dict().items()}, folder / f"model-{k:03d}.safetensors"
        )

    model, recorded = _train_plain(tmp_path, save, steps=6, every=1)
    t = lt.load_trajectory(folder, model, quiet=True)
    np.testing.assert_array_equal(t.params, np.asarray(recorded.params))
    kept = lt.load_trajectory(folder, model, every=4, quiet=True)
    assert len(kept) == 3  # 0, 4 and the last (6)
    np.testing.assert_array_equal(kept.params, _rows_at(recorded, [0, 4, 6]))
    listed = lt.load_trajectory([folder / "model-006.safetensors", folder / "model-000.safetensors"], model, quiet=True)
    np.testing.assert_array_equal(listed.params, _rows_at(recorded, [6, 0]))  # a list is taken in its order


def test_lightning_model_checkpoint_loads_bit_for_bit(tmp_path):
    import lightning.pytorch as pl

    from losstrail.builtin.models import MLP

    pl.seed_everything(0, verbose=False)
    model = MLP(input_dim=2, num_classes=3, hidden_dim=4, learning_rate=0.05, optimizer="sgd")
    X, y = torch.randn(40, 2), torch.randint(0, 3, (40,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=10)
    recorder = lt.TrajectoryRecorder(params="all")
    saver = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1,
                                         save_last=True)  # fmt: skip
    trainer = pl.Trainer(max_epochs=2, callbacks=[recorder, saver], logger=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")  # fmt: skip
    trainer.fit(model, loader)
    t = lt.load_trajectory(tmp_path / "ckpt", model, quiet=True)
    assert t.step.tolist() == [3, 6]  # last.ckpt, a copy of the newest, is left out
    assert t.epoch.tolist() == [0, 1]
    np.testing.assert_array_equal(t.params, _rows_at(recorder.trajectory, [3, 6]))


@pytest.fixture(scope="module")
def hf_run(tmp_path_factory):
    """A tiny GPT-2 trained 6 steps by a transformers Trainer saving every 2, recorded by LosstrailCallback."""
    transformers = pytest.importorskip("transformers")
    from test_integrations import Corpus, N, tiny_gpt2

    tmp_path = tmp_path_factory.mktemp("hf")
    model = tiny_gpt2()
    callback = lt.LosstrailCallback(params="all")
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=6, per_device_train_batch_size=N // 2, learning_rate=1e-2,
        report_to=[], use_cpu=True, save_strategy="steps", save_steps=2, logging_steps=1, disable_tqdm=True, seed=0,
    )  # fmt: skip
    transformers.Trainer(model=model, args=args, train_dataset=Corpus(), callbacks=[callback]).train()
    return tmp_path, model, callback


def test_transformers_trainer_checkpoints_load_bit_for_bit(hf_run):
    tmp_path, model, callback = hf_run
    t = lt.load_trajectory(tmp_path / "out", model, quiet=True)
    assert t.step.tolist() == [2, 4, 6]
    recorded = callback.trajectory
    np.testing.assert_array_equal(t.params, _rows_at(recorded, [2, 4, 6]))
    assert np.isfinite(t.loss).all()  # the training loss trainer_state.json logged at each checkpoint's step
    assert t.epoch.tolist() == [0, 1, 2]  # 2 steps an epoch: the epoch each checkpoint's last step was in
    # without a model: every tensor of the first checkpoint, by name, in the same values
    alone = lt.load_trajectory(tmp_path / "out", quiet=True)
    assert alone.names is not None and len(alone) == 3


def test_peft_adapter_alone(tmp_path):
    pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    from test_integrations import tiny_gpt2

    model = peft.get_peft_model(tiny_gpt2(), peft.LoraConfig(r=2, target_modules=["c_attn"], lora_dropout=0.0))
    rows = []
    for k in range(3):
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(0.01 * (k + 1))
        folder = tmp_path / f"checkpoint-{10 * k}"
        model.save_pretrained(folder)  # adapter_model.safetensors alone
        rows.append(torch.cat([p.detach().reshape(-1) for p in model.parameters() if p.requires_grad]).numpy())
    t = lt.load_trajectory(tmp_path, model, quiet=True)
    assert t.step.tolist() == [0, 10, 20]
    np.testing.assert_array_equal(t.params, np.stack(rows))
    assert t.names == tuple(n for n, p in model.named_parameters() if p.requires_grad)


def test_sharded_hugging_face_checkpoint(tmp_path):
    transformers = pytest.importorskip("transformers")
    from test_integrations import tiny_gpt2

    model = tiny_gpt2()
    for k in (1, 2):
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1.01)
        model.save_pretrained(tmp_path / f"checkpoint-{k}", max_shard_size="20KB")
    assert list((tmp_path / "checkpoint-1").glob("*.index.json"))
    t = lt.load_trajectory(tmp_path, transformers.GPT2LMHeadModel(model.config), quiet=True)
    np.testing.assert_array_equal(t.params[-1], torch.cat([p.detach().reshape(-1) for p in model.parameters()]))


# ------------------------------------------------------------------ one clear error each


def _net(width=4):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(2, width), torch.nn.Linear(width, 1))


def test_mismatched_keys_and_shapes_name_the_tensor_and_file(tmp_path):
    net = _net()
    torch.save(net.state_dict(), tmp_path / "step_1.pt")
    state = net.state_dict()
    state["2.weight"] = torch.zeros(1, 1)
    torch.save(state, tmp_path / "step_2.pt")
    with pytest.raises(ValueError, match=r"step_2\.pt' holds a tensor '2\.weight' that model=Sequential does not"):
        lt.load_trajectory(tmp_path, net, quiet=True)
    del state["2.weight"], state["0.bias"]
    torch.save(state, tmp_path / "step_2.pt")
    with pytest.raises(ValueError, match=r"step_2\.pt' has no tensor '0\.bias', which model=Sequential has"):
        lt.load_trajectory(tmp_path, net, quiet=True)
    with pytest.raises(ValueError, match=r"step_1\.pt': tensor '0\.weight' has shape \(4, 2\) but .* \(8, 2\)"):
        lt.load_trajectory(tmp_path / "step_1.pt", _net(8), quiet=True)


def test_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("no weights here")
    with pytest.raises(ValueError, match="holds no checkpoint: expected weight files"):
        lt.load_trajectory(tmp_path, quiet=True)


def test_two_models_checkpoints_mixed(tmp_path):
    torch.save(_net(4).state_dict(), tmp_path / "step_1.pt")
    torch.save(_net(6).state_dict(), tmp_path / "step_2.pt")
    with pytest.raises(ValueError, match=r"step_2\.pt': tensor '0\.weight' has shape \(6, 2\).*not all of one model"):
        lt.load_trajectory(tmp_path, quiet=True)
    with pytest.raises(ValueError, match=r"step_2\.pt': tensor '0\.weight' has shape \(6, 2\) but model="):
        lt.load_trajectory(tmp_path, _net(4), quiet=True)


class _Payload:
    """Unpickling this would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_payload_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "ckpt"
    folder.mkdir()
    torch.save({"0.weight": torch.zeros(4, 2), "evil": _Payload(marker)}, folder / "pytorch_model_1.bin")
    with open(folder / "pytorch_model_2.bin", "wb") as f:  # a raw pickle, not torch's zip format
        pickle.dump({"0.weight": _Payload(marker)}, f)
    for name in ("pytorch_model_1.bin", "pytorch_model_2.bin"):
        with pytest.raises(ValueError, match="weights_only=True.*never unpickles"):
            lt.load_trajectory(folder / name, quiet=True)
    assert not marker.exists()


def test_a_link_out_of_the_folder_is_refused(tmp_path):
    outside = tmp_path / "elsewhere.pt"
    torch.save(_net().state_dict(), outside)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    torch.save(_net().state_dict(), folder / "step_1.pt")
    (folder / "step_2.pt").symlink_to(outside)
    with pytest.raises(ValueError, match="outside the checkpoint folder"):
        lt.load_trajectory(folder, quiet=True)


def test_unknown_order_is_an_error(tmp_path):
    torch.save(_net().state_dict(), tmp_path / "first.pt")
    torch.save(_net().state_dict(), tmp_path / "second.pt")
    with pytest.raises(ValueError, match="cannot tell the training order of .*first.pt.*list of files"):
        lt.load_trajectory(tmp_path, quiet=True)
    assert len(lt.load_trajectory([tmp_path / "second.pt", tmp_path / "first.pt"], quiet=True)) == 2


def test_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="source=.*does not exist"):
        lt.load_trajectory(tmp_path / "nope")
    with pytest.raises(ValueError, match="every=0 must be a positive integer"):
        lt.load_trajectory(tmp_path, every=0)


# ------------------------------------------------------------------ the whole pipeline on a path from checkpoints


def _mlp_run(folder, seed, X, y, steps=8):
    """An MLP trained by hand from the same start; its weights saved by torch.save at every step."""
    from losstrail.builtin.models import MLP

    torch.manual_seed(0)
    model = MLP(input_dim=2, num_classes=3, hidden_dim=4)
    torch.manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    folder.mkdir()
    for k in range(steps + 1):
        torch.save(model.state_dict(), folder / f"epoch={k // 4}-step={k}.ckpt")
        loss = torch.nn.functional.cross_entropy(model(X + 0.1 * torch.randn_like(X)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def test_the_pipeline_runs_on_a_checkpoint_path(tmp_path, tiny_data):
    from PIL import Image

    X, y = tiny_data
    model = _mlp_run(tmp_path / "a", 1, X, y)
    t = lt.load_trajectory(tmp_path / "a", model, quiet=True)
    assert t.step.tolist() == list(range(9)) and t.epoch.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2]
    plane = lt.make_plane(t, "pca")
    path = lt.project(plane, t, model=model, data=(X, y))
    # the true loss at each point is the model evaluated with that checkpoint's weights loaded
    twin = type(model)(input_dim=2, num_classes=3, hidden_dim=4)
    twin.load_state_dict(torch.load(tmp_path / "a" / "epoch=1-step=5.ckpt", weights_only=True))
    with torch.no_grad():
        expected = float(torch.nn.functional.cross_entropy(twin(X), y))
    assert path.true_loss[5] == pytest.approx(expected, rel=1e-5)
    xs, ys = lt.path_grid(path.xy, resolution=10)
    surface = lt.loss_surface(model, (X, y), plane, xs, ys, quiet=True)
    gif = lt.animate(path, surface, tmp_path / "a.gif", quiet=True, max_frames=5)
    with Image.open(gif) as image:
        assert image.n_frames == 5
    assert lt.export(surface, tmp_path / "s.csv", projection=path, path=tmp_path / "p.csv").is_file()
    comparison = lt.compare(trained={"a": tmp_path / "a", "b": _mlp_run(tmp_path / "b", 2, X, y) and tmp_path / "b"},
                            model=model, datamodule=(X, y), resolution=8, out=tmp_path / "cmp.gif",
                            run_dir=tmp_path / "cmp", n_frames=4, quiet=True)  # fmt: skip
    assert comparison.names == ("a", "b") and (tmp_path / "cmp.gif").is_file()
    np.testing.assert_array_equal(comparison.projections[0].step, t.step)


def test_the_path_command_draws_a_trainer_folder(hf_run, tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from losstrail.cli import app
    from test_integrations import Corpus

    folder = hf_run[0] / "out"
    batch = Corpus().batch()
    torch.save({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}, tmp_path / "b.pt")
    runner = CliRunner()
    result = runner.invoke(app, ["path", str(folder), "--data", str(tmp_path / "b.pt"), "--out",
                                 str(tmp_path / "x.png"), "--resolution", "5", "--quiet"])  # fmt: skip
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "x.png") as image:
        assert image.size == (1280, 600)  # the contour and the true/slice loss panel
    result = runner.invoke(app, ["path", str(folder), "--out", str(tmp_path / "y.png")])
    assert result.exit_code == 0, result.output
    assert "no --data: drawing the path and its recorded losses, without a surface" in result.output
    result = runner.invoke(app, ["path", str(tmp_path / "nowhere"), "--out", str(tmp_path / "z.png")])
    assert result.exit_code == 2 and "DIR=" in result.output
    # No output onto an input: not the data file, nor anything inside the checkpoint folder.
    before = (tmp_path / "b.pt").read_bytes()
    result = runner.invoke(app, ["path", str(folder), "--data", str(tmp_path / "b.pt"), "--out", str(tmp_path / "b.pt"),
                                 "--format", "gif"])  # fmt: skip
    assert result.exit_code == 2 and "--data=" in result.output and "an input" in result.output, result.output
    assert (tmp_path / "b.pt").read_bytes() == before
    result = runner.invoke(app, ["path", str(folder), "--out", str(folder / "p.gif")])
    assert result.exit_code == 2 and "inside the checkpoint folder DIR=" in result.output, result.output
    assert not (folder / "p.gif").exists()
