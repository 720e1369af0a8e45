"""A LoRA adapter on a small GPT-2, trained with the Hugging Face Trainer: the landscape of the adapter only.

Run: .venv/bin/python examples/gpt2_lora.py [OUT.gif]
(needs ``pip install 'losstrail[hf]'``; downloads nothing).

The base model is the tiny character-level GPT-2 of ``gpt2_tiny.py``, pretrained here for
100 steps on the first two rhymes; then ``peft`` freezes it and adds rank-4 LoRA adapters
to every attention and MLP projection, which ``Trainer.train()`` fits to all four rhymes
for 150 steps with a ``LosstrailCallback`` attached. The callback's default
``params='trainable'`` records just the adapter (a few thousand numbers, not the model's
27k), so the plane, the path and the grid live in the adapter's space and every frozen
weight keeps its value at every grid point. About a minute on two CPU cores.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time

import torch
from gpt2_tiny import TEXT, corpus, tiny_gpt2, train

import losstrail


class Rows(torch.utils.data.Dataset):
    """The rows of a dict batch, one dict per example, for the Trainer."""

    def __init__(self, batch: dict):
        self.batch = batch

    def __len__(self):
        return len(self.batch["input_ids"])

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.batch.items()}


def main() -> None:
    import peft
    import transformers

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="/tmp/gpt2_lora.gif", help="the animation (.gif, .mp4, .html)")
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args()
    start = time.perf_counter()
    torch.manual_seed(0)
    data, chars = corpus(512, seed=0)
    eval_data, _ = corpus(64, seed=1)
    base_data, _ = corpus(512, seed=2, text=TEXT[: TEXT.index("humpty")])
    base = tiny_gpt2(len(chars))
    train(base, base_data, 100, lr=3e-3)

    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True)
    model = peft.get_peft_model(base, config)
    callback = losstrail.LosstrailCallback()
    with tempfile.TemporaryDirectory() as scratch:
        arguments = transformers.TrainingArguments(
            output_dir=scratch, max_steps=args.steps, per_device_train_batch_size=16, learning_rate=1e-2,
            lr_scheduler_type="constant", report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True,
            logging_strategy="no", seed=0,
        )  # fmt: skip
        transformers.Trainer(model=model, args=arguments, train_dataset=Rows(data), callbacks=[callback]).train()
    trajectory = callback.trajectory
    adapter = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"recorded {len(trajectory)} points of the adapter's {trajectory.n_params} parameters "
          f"(the model has {sum(p.numel() for p in model.parameters())})")  # fmt: skip
    assert trajectory.n_params == adapter

    plane = losstrail.make_plane(trajectory, "pca")
    projection = losstrail.project(plane, trajectory, model=model, data=eval_data)
    xs, ys = losstrail.path_grid(projection.xy, 21)
    surface = losstrail.loss_surface(model, eval_data, plane, xs, ys, quiet=True)
    first, last = math.exp(projection.true_loss[0]), math.exp(projection.true_loss[-1])
    title = f"LoRA adapter of a tiny GPT-2 ({adapter} of its parameters): perplexity {first:.1f} -> {last:.1f}"
    losstrail.animate(projection, surface, args.out, title=title, max_frames=60, quiet=True)
    print(f"wrote {args.out}: perplexity {first:.1f} -> {last:.1f}, {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
