"""Big models within their own footprint: a filter plane and its grid around a GPT-2 with no path.

Parts (one per run; each prints its figures as one JSON line at the end):
  a  the 124M GPT-2 (transformers' GPT2Config() default, random init): filter plane, 5x5 grid on 4x64
     tokens, PNG; plane seconds, seconds per grid point against one plain forward pass on the same
     batch, peak RSS / model bytes
  b  a GPT-2 XL configuration (1.5B parameters, 6 GB float32): filter plane with its directions drawn
     again tensor by tensor, module by module, at each point (store='seed'; --store tensors keeps them),
     3x3 grid on 1x32 tokens (--tokens to change), PNG; peak RSS / model bytes
  c  the same in bfloat16 (half the memory)
  d  the 5.25M-parameter MLP x 2,000-step path: helper i21b's, in benchmarks/bench_big_path.py (run there)

Each part runs under a watchdog thread that ends the process when its resident memory passes
``--limit-gb`` (default: 8 GB for a, 17 for b, 9 for c); run it under ``timeout`` too:

    timeout 1800 python benchmarks/bench_big.py --part a --out /tmp/gpt2.png
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time

import numpy as np
import torch

import losstrail as lt

PARTS = {
    "a": {"config": {}, "dtype": torch.float32, "resolution": 5, "store": "tensors", "limit_gb": 8,
          "tokens": (4, 64)},
    "b": {"config": {"n_embd": 1600, "n_layer": 48, "n_head": 25}, "dtype": torch.float32, "resolution": 3,
          "store": "seed", "limit_gb": 17, "tokens": (1, 32)},
    "c": {"config": {"n_embd": 1600, "n_layer": 48, "n_head": 25}, "dtype": torch.bfloat16, "resolution": 3,
          "store": "seed", "limit_gb": 9, "tokens": (1, 32)},
}  # fmt: skip


def rss() -> int:
    """Resident bytes of this process now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def watchdog(limit: int, every: float = 0.2) -> None:
    """End the process (exit code 3) as soon as its resident memory passes ``limit`` bytes."""

    def watch():
        while True:
            now = rss()
            if now > limit:
                print(f"bench_big: resident memory {now / 2**30:.1f} GiB passed the limit of "
                      f"{limit / 2**30:.1f} GiB; stopped", file=sys.stderr, flush=True)  # fmt: skip
                os._exit(3)
            time.sleep(every)

    threading.Thread(target=watch, daemon=True).start()


def build_gpt2(overrides: dict, dtype: torch.dtype):
    """A GPT-2 from its config with random weights, made on the meta device and filled cheaply (N(0, 0.02)
    weights, zero biases, unit LayerNorm scales): transformers' own initialization of 1.5B parameters
    takes minutes on two cores."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(**overrides)
    with torch.device("meta"):
        model = GPT2LMHeadModel(config)
    model = model.to_empty(device="cpu").to(dtype)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.02, generator=generator)
            elif "ln" in name and name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.zero_()
    model.tie_weights()
    return model.eval(), config


def forward_seconds(model, batch: dict, times: int = 2) -> float:
    """The best of ``times`` plain forward passes of ``model`` on ``batch`` (no grad), in seconds."""
    best = float("inf")
    with torch.no_grad():
        for _ in range(times):
            started = time.perf_counter()
            model(**batch)
            best = min(best, time.perf_counter() - started)
    return best


def run_part(part: str, out: str, limit_gb: float | None, tokens: tuple[int, int] | None = None,
             store: str | None = None) -> dict:  # fmt: skip
    spec = {**PARTS[part], **({"store": store} if store else {})}
    tokens = tokens or spec["tokens"]
    torch.manual_seed(0)
    watchdog(int((limit_gb or spec["limit_gb"]) * 2**30))
    import transformers  # noqa: F401 - imported before the start is measured: its own memory is not the model's

    base = rss()
    started = time.perf_counter()
    model, config = build_gpt2(spec["config"], spec["dtype"])
    build_s = time.perf_counter() - started
    built = rss()
    n_params = sum(p.numel() for p in model.parameters())
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    ids = torch.randint(0, config.vocab_size, tuple(tokens), generator=torch.Generator().manual_seed(1))
    batch = {"input_ids": ids, "labels": ids}
    print(f"bench_big part {part}: {n_params:,} parameters built in {build_s:.0f} s", file=sys.stderr, flush=True)

    started = time.perf_counter()
    plane = lt.make_plane(model, "filter", seed=0, store=spec["store"])
    plane_s = time.perf_counter() - started
    print(f"bench_big part {part}: plane in {plane_s:.1f} s, peak RSS {peak_rss() / 1e9:.2f} GB "
          f"({peak_rss() / model_bytes:.2f}x the model)", file=sys.stderr, flush=True)  # fmt: skip

    forward_s = forward_seconds(model, batch)
    print(f"bench_big part {part}: one plain forward pass {forward_s:.1f} s, peak RSS {peak_rss() / 1e9:.2f} GB",
          file=sys.stderr, flush=True)  # fmt: skip

    xs, ys = lt.plane_grid(plane, resolution=spec["resolution"])
    started = time.perf_counter()
    surface = lt.loss_surface(model, batch, plane, xs, ys, batch_size=tokens[0], quiet=part == "a")
    grid_s = time.perf_counter() - started
    n_points = len(xs) * len(ys)
    lt.animate(plane, surface, out, quiet=True)
    peak = peak_rss()
    return {
        "part": part, "tokens": list(tokens), "params": n_params, "dtype": str(spec["dtype"]).replace("torch.", ""),
        "store": spec["store"], "model_gb": round(model_bytes / 1e9, 3), "build_s": round(build_s, 1),
        "plane_s": round(plane_s, 2), "forward_s": round(forward_s, 3), "grid_points": n_points,
        "grid_s": round(grid_s, 1), "s_per_point": round(grid_s / n_points, 3),
        "point_over_forward": round(grid_s / n_points / forward_s, 2),
        "peak_rss_gb": round(peak / 1e9, 2), "peak_over_model": round(peak / model_bytes, 2),
        "peak_above_start_over_model": round((peak - base) / model_bytes, 2),
        "built_rss_gb": round(built / 1e9, 2), "peak_above_built_over_model": round((peak - built) / model_bytes, 2),
        "loss_range": [round(float(np.nanmin(surface.loss)), 4), round(float(np.nanmax(surface.loss)), 4)],
        "threads": torch.get_num_threads(), "load": round(os.getloadavg()[0], 1), "png": out,
    }  # fmt: skip


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=[*PARTS, "d"], default="a")
    parser.add_argument("--out", default=None, help="the PNG to write (default /tmp/bench_big_<part>.png)")
    parser.add_argument("--limit-gb", type=float, default=None, help="resident memory at which to stop")
    parser.add_argument(
        "--store", choices=["tensors", "seed"], default=None, help="the plane's store= (default: the part's)"
    )
    parser.add_argument("--tokens", default=None, help="BxL token batch (default 4x64 for a, 1x32 for the XL parts)")
    args = parser.parse_args(argv)
    if args.part == "d":
        sys.exit("part d (the 5.25M x 2,000-step path) is helper i21b's: run benchmarks/bench_big_path.py")
    tokens = None if args.tokens is None else tuple(int(n) for n in args.tokens.lower().split("x"))
    figures = run_part(args.part, args.out or f"/tmp/bench_big_{args.part}.png", args.limit_gb, tokens, args.store)
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
