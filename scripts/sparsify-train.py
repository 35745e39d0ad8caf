#!/usr/bin/env python3
"""Trains a sparsify TopK SAE on the rows of a Lantern activation store, the way sparsify's
Trainer does with its defaults, and saves it in sparsify's layout (which `lantern sae eval`
reads). For issue 14 §4: the peer on the same rows and token budget (BENCHMARKS.md, "Real
activations against sparsify").

The rows: those `lantern sae train` keeps by default (position 0 of each sequence and rows
above 10 × the median norm left out, the median over the first 65 536 kept rows), shuffled
once with --seed. The step is sparsify 1.3.3's `Trainer` with `loss_fn="fvu"` and no
distribution: `b_dec` = mean of the first batch; each step `set_decoder_norm_to_unit_norm`,
forward, `fvu` (+ `auxk_alpha · auxk_loss` when --auxk-alpha > 0, dead after 10 M tokens),
backward, `remove_gradient_parallel_to_decoder_directions`, optimizer step. Optimizer as
sparsify's: `signum` (its default: schedule-free SignSGD, momentum 0.95, lr
5e-3/√(M/2¹⁴), the averaged weights saved) or `adam` (lr 2e-4/√(M/2¹⁴), linear warm-up over
1000 steps then linear decay to 0; `--schedule lantern`: Lantern's TopK schedule instead,
constant then linear decay to 0 over the last 20 % of the steps, no warm-up).

The rows are shuffled across the whole store by default. `--window N` reads them as Lantern
did before 2026-12-04 (`sae train --shuffle window`): the store cut into 10 equal parts taken
in a random order, rows shuffled only within windows of N consecutive rows of that stream. With
the same optimizer, that order alone cost 0.013 held-out FVU on SmolLM2 (BENCHMARKS.md).

    python3 -m venv /tmp/peer && /tmp/peer/bin/pip install eai-sparsify==1.3.3
    /tmp/peer/bin/python scripts/sparsify-train.py --acts STORE --num-latents 4608 --k 32 \
        --tokens 2000000 --out DIR [--optimizer adam] [--threads 2]
"""

import argparse
import json
import math
import os
import pathlib
import sys
import time

os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")

import numpy as np
import torch
from safetensors.numpy import load_file
from sparsify import SparseCoder, SparseCoderConfig


def load_rows(store, outlier_factor):
    """The store's rows as float16 [n, d], without position 0 and norm outliers."""
    manifest = json.loads((store / "manifest.json").read_text())
    acts, pos = [], []
    for shard in manifest["shards"]:
        t = load_file(str(store / shard["file"]))
        acts.append(t["acts"].astype(np.float16))
        pos.append(t["positions"])
    acts, pos = np.concatenate(acts), np.concatenate(pos)
    keep = pos > 0 if (pos > 0).any() else np.ones(len(pos), bool)
    norms = np.linalg.norm(acts.astype(np.float32), axis=1)
    median = np.sort(norms[keep][:65536])[len(norms[keep][:65536]) // 2]
    first = int((~keep).sum())
    outlier = keep & (norms > outlier_factor * median)
    keep &= ~outlier
    print(
        f"{store}: {len(acts)} rows; left out {first} at position 0, {int(outlier.sum())} "
        f"above {outlier_factor}x the median norm {median:.1f}",
        file=sys.stderr,
    )
    return acts[keep]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--acts", type=pathlib.Path, required=True)
    ap.add_argument("--num-latents", type=int, required=True)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--tokens", type=int, required=True)
    ap.add_argument("--batch", type=int, default=4096, help="tokens per step")
    ap.add_argument("--optimizer", choices=["signum", "adam"], default="signum")
    ap.add_argument("--lr", type=float, help="default: sparsify's rule for the optimizer")
    ap.add_argument("--schedule", choices=["sparsify", "lantern"], default="sparsify",
                    help="adam only: sparsify's warm-up + decay, or Lantern's TopK schedule")
    ap.add_argument("--window", type=int, default=0,
                    help="shuffle within windows of N rows (Lantern's old order); 0 = whole store")
    ap.add_argument("--auxk-alpha", type=float, default=0.0, help="sparsify's default 0")
    ap.add_argument("--outlier-factor", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=pathlib.Path, required=True)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rows = load_rows(a.acts, a.outlier_factor)
    n, d = rows.shape
    order = np.random.default_rng(a.seed).permutation(n)
    if a.window:
        rng = np.random.default_rng(a.seed)
        parts = np.array_split(np.arange(n), 10)
        stream = np.concatenate([parts[i] for i in rng.permutation(10)])
        order = np.concatenate(
            [rng.permutation(stream[i : i + a.window]) for i in range(0, n, a.window)]
        )
    steps = a.tokens // a.batch
    m = a.num_latents
    sae = SparseCoder(d, SparseCoderConfig(num_latents=m, k=a.k), device="cpu", dtype=torch.float32)
    if a.optimizer == "signum":
        from schedulefree import ScheduleFreeWrapper
        from sparsify.sign_sgd import SignSGD

        lr = a.lr or 5e-3 / math.sqrt(m / 2**14)
        opt = ScheduleFreeWrapper(SignSGD([dict(params=sae.parameters(), lr=lr)]), momentum=0.95)
        opt.train()
        sched = None
    else:
        from transformers import get_linear_schedule_with_warmup

        lr = a.lr or 2e-4 / math.sqrt(m / 2**14)
        opt = torch.optim.Adam([dict(params=sae.parameters(), lr=lr)])
        if a.schedule == "lantern":
            tail = steps // 5
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: min(1.0, (steps - t) / tail))
        else:
            sched = get_linear_schedule_with_warmup(opt, 1000, steps)
    since_fired = torch.zeros(m, dtype=torch.long)
    t0 = time.time()
    for step in range(steps):
        idx = order[(np.arange(step * a.batch, (step + 1) * a.batch)) % n]
        x = torch.from_numpy(rows[idx].astype(np.float32))
        if step == 0:
            sae.b_dec.data = x.mean(0)
        sae.set_decoder_norm_to_unit_norm()
        dead = since_fired > 10_000_000 if a.auxk_alpha > 0 else None
        out = sae(x, dead_mask=dead)
        loss = out.fvu + a.auxk_alpha * out.auxk_loss
        loss.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
        if sched is not None:
            sched.step()
        fired = torch.zeros(m, dtype=torch.bool)
        fired[out.latent_indices.flatten()] = True
        since_fired += a.batch
        since_fired[fired] = 0
        if step % 50 == 0 or step == steps - 1:
            print(
                f"step {step}/{steps} fvu {out.fvu.item():.4f} "
                f"{(step + 1) * a.batch / (time.time() - t0):.0f} tok/s",
                file=sys.stderr,
                flush=True,
            )
    if a.optimizer == "signum":
        opt.eval()  # the schedule-free average, what sparsify's Trainer saves
    sae.set_decoder_norm_to_unit_norm()
    sae.save_to_disk(a.out)
    secs = time.time() - t0
    meta = {
        "peer": f"eai-sparsify {__import__('importlib.metadata').metadata.version('eai-sparsify')}, torch {torch.__version__}",
        "optimizer": a.optimizer,
        "schedule": a.schedule if a.optimizer == "adam" else "schedule-free",
        "order": f"windows of {a.window}" if a.window else "whole store",
        "lr": lr,
        "num_latents": m,
        "k": a.k,
        "tokens": steps * a.batch,
        "batch": a.batch,
        "rows_available": n,
        "seconds": round(secs, 1),
        "tokens_per_s": round(steps * a.batch / secs, 1),
    }
    (a.out / "train.json").write_text(json.dumps(meta, indent=2))
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
