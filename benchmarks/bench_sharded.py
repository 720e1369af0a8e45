"""A plane and its grid around a model sharded across ranks (FSDP2's ``fully_shard``): each rank's memory.

Launches itself under ``torch.distributed.run`` (gloo on CPU, 2 ranks unless ``--ranks``): each rank
builds the 124M GPT-2 on the meta device, shards every block and the root with ``fully_shard``, fills
its own shards (N(0, 0.02) weights, drawn whole tensor by tensor from one seed and cut, so every rank
holds its part of the same model), makes a filter plane (stored directions, this rank's part) and a
3x3 grid on 4x64 tokens, with every point written into the shards in place. Prints, per rank, the
shard's bytes, peak RSS above the start (after imports) in units of the shard, plane seconds and
seconds per point against one plain (sharded) forward pass; rank 0 writes a PNG. Under a resident
memory watchdog per rank (``--limit-gb``); run it under ``timeout``:

    timeout 900 python benchmarks/bench_sharded.py --out /tmp/sharded.png
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch

from bench_big import forward_seconds, peak_rss, rss, watchdog


def launch(args) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(args.ranks),
               __file__, "--worker", "--out", args.out, "--limit-gb", str(args.limit_gb)]  # fmt: skip
    sys.exit(subprocess.run(command).returncode)


def work(args) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from transformers import GPT2Config, GPT2LMHeadModel

    import losstrail as lt
    from losstrail.evaluation.inplace import sharded_like

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    watchdog(int(args.limit_gb * 2**30))
    base = rss()
    config = GPT2Config()
    with torch.device("meta"):
        model = GPT2LMHeadModel(config)
    mesh = init_device_mesh("cpu", (world,))
    for block in model.transformer.h:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    model.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # each tensor drawn whole (the same on every rank), this rank's part kept
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                full = torch.empty(p.shape).normal_(0.0, 0.02, generator=generator)
            else:
                full = torch.full(p.shape, 1.0 if "ln" in name and name.endswith("weight") else 0.0)
            p.to_local().copy_(sharded_like(full, p).to_local())
            del full
    model.eval()
    shard_bytes = sum(p.to_local().numel() * p.element_size() for p in model.parameters())
    built = rss()
    ids = torch.randint(0, config.vocab_size, (4, 64), generator=torch.Generator().manual_seed(1))
    batch = {"input_ids": ids, "labels": ids}

    started = time.perf_counter()
    plane = lt.make_plane(model, "filter", seed=0)
    plane_s = time.perf_counter() - started
    after_plane = peak_rss()
    forward_s = forward_seconds(model, batch)
    after_forward = peak_rss()
    xs, ys = lt.plane_grid(plane, resolution=3)
    started = time.perf_counter()
    surface = lt.loss_surface(model, batch, plane, xs, ys, batch_size=4)
    point_s = (time.perf_counter() - started) / (len(xs) * len(ys))
    figures = {
        "rank": rank, "shard_gb": round(shard_bytes / 1e9, 3), "plane_s": round(plane_s, 2),
        "forward_s": round(forward_s, 3), "s_per_point": round(point_s, 3),
        "point_over_forward": round(point_s / forward_s, 2), "peak_rss_gb": round(peak_rss() / 1e9, 2),
        "peak_above_start_over_shard": round((peak_rss() - base) / shard_bytes, 2),
        "built_above_start_over_shard": round((built - base) / shard_bytes, 2),
        "plane_peak_above_start_over_shard": round((after_plane - base) / shard_bytes, 2),
        "forward_peak_above_start_over_shard": round((after_forward - base) / shard_bytes, 2),
    }  # fmt: skip
    every = [None] * world
    dist.all_gather_object(every, figures)
    if rank == 0:
        lt.animate(plane, surface, args.out, quiet=True)
        model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        print(json.dumps({"ranks": every, "model_gb": round(model_bytes / 1e9, 3), "png": args.out,
                          "loss_range": [round(float(np.nanmin(surface.loss)), 4),
                                         round(float(np.nanmax(surface.loss)), 4)],
                          "load": round(os.getloadavg()[0], 1)}))  # fmt: skip
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--out", default="/tmp/bench_sharded.png")
    parser.add_argument("--limit-gb", type=float, default=4.0, help="resident memory per rank at which to stop")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    work(args) if args.worker else launch(args)


if __name__ == "__main__":
    main()
