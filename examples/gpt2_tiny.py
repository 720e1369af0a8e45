"""A small GPT-2, built from a config and trained on a tiny corpus, walking across its loss landscape.

Run: .venv/bin/python examples/gpt2_tiny.py [OUT.gif] [--still OUT.png]
(needs ``pip install 'losstrail[hf]'``; downloads nothing: random init, a corpus made here).

A character-level GPT-2 (2 layers, width 32, about 27k parameters) learns a few nursery
rhymes for 300 Adam steps; a ``Recorder`` keeps the path, the plane is the path's top two
principal directions, and the grid evaluates ``model(**batch).loss`` on dict batches
(``input_ids``, ``attention_mask``, ``labels``). The title and the read-out show perplexity,
the exponential of the mean token loss. About a minute on two CPU cores.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

import losstrail

TEXT = (
    "twinkle twinkle little star how I wonder what you are up above the world so high like a diamond in the sky. "
    "mary had a little lamb its fleece was white as snow and everywhere that mary went the lamb was sure to go. "
    "humpty dumpty sat on a wall humpty dumpty had a great fall all the king's horses and all the king's men "
    "couldn't put humpty together again. jack and jill went up the hill to fetch a pail of water jack fell down "
    "and broke his crown and jill came tumbling after. "
)
CONTEXT = 32


def corpus(n: int, seed: int = 0, text: str = TEXT) -> tuple[dict, list[str]]:
    """``n`` windows of CONTEXT characters from ``text`` as a dict batch, and the vocabulary (TEXT's characters)."""
    chars = sorted(set(TEXT))
    ids = torch.tensor([chars.index(c) for c in text])
    starts = torch.randint(0, len(ids) - CONTEXT, (n,), generator=torch.Generator().manual_seed(seed))
    windows = torch.stack([ids[s : s + CONTEXT] for s in starts.tolist()])
    batch = {"input_ids": windows, "attention_mask": torch.ones_like(windows), "labels": windows.clone()}
    return batch, chars


def tiny_gpt2(vocab_size: int, attention: str = "eager"):
    """A 2-layer GPT-2 of width 32, random init. Eager attention: it batches well under vmap on a CPU."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=vocab_size, n_positions=CONTEXT, n_embd=32, n_layer=2, n_head=2,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    config._attn_implementation = attention
    return GPT2LMHeadModel(config)


def train(model, data: dict, steps: int, lr: float, batch: int = 16, params="trainable") -> losstrail.Trajectory:
    """Adam on random minibatches of ``data``, recorded every step."""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    recorder = losstrail.Recorder(model, params=params)
    g = torch.Generator().manual_seed(0)
    n = len(data["input_ids"])
    model.train()
    for _ in range(steps):
        rows = torch.randint(0, n, (batch,), generator=g)
        loss = model(**{k: v[rows] for k, v in data.items()}).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        recorder.record(loss=loss)
    with torch.no_grad():  # the loss at the final parameters, on one more minibatch
        rows = torch.randint(0, n, (batch,), generator=g)
        recorder.finish(loss=model(**{k: v[rows] for k, v in data.items()}).loss)
    return recorder.trajectory


def landscape(model, trajectory, data, out, still, title, resolution=25):
    plane = losstrail.make_plane(trajectory, "pca")
    projection = losstrail.project(plane, trajectory, model=model, data=data)
    xs, ys = losstrail.path_grid(projection.xy, resolution)
    surface = losstrail.loss_surface(model, data, plane, xs, ys, quiet=True)
    first, last = math.exp(projection.true_loss[0]), math.exp(projection.true_loss[-1])
    title = f"{title}: perplexity exp(loss) {first:.1f} -> {last:.1f} along the path"
    losstrail.animate(projection, surface, out, title=title, max_frames=60, quiet=True)
    if still:
        losstrail.animate(projection, surface, still, title=title, quiet=True)
    return surface, first, last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="/tmp/gpt2_tiny.gif", help="the animation (.gif, .mp4, .html)")
    parser.add_argument("--still", help="also a still picture of the whole path (.png)")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    start = time.perf_counter()
    torch.manual_seed(0)
    train_data, chars = corpus(512, seed=0)
    eval_data, _ = corpus(64, seed=1)
    model = tiny_gpt2(len(chars))
    trajectory = train(model, train_data, args.steps, lr=3e-3)
    _, first, last = landscape(model, trajectory, eval_data, args.out, args.still, "tiny GPT-2")
    print(f"wrote {args.out}: perplexity {first:.1f} -> {last:.1f}, {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
