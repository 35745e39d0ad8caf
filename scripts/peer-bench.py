#!/usr/bin/env python3
"""sparsify's TopK training step on the CPU, at the shapes of `lantern bench sae`.

One step is what sparsify's Trainer does per batch with its default Adam (no gradient
clipping, no dead latents yet): forward (fused encoder + top-k, sparse decode), FVU loss,
backward, `remove_gradient_parallel_to_decoder_directions`, `Adam.step`, `zero_grad`,
`set_decoder_norm_to_unit_norm`. Random Gaussian inputs; one untimed warm-up step. On a CPU
sparsify decodes with `embedding_bag` (its Triton decoder needs a GPU).

    python3 -m venv /tmp/peer && /tmp/peer/bin/pip install eai-sparsify==1.3.3
    /tmp/peer/bin/python scripts/peer-bench.py --shape 128,2048,32 --shape 768,24576,32 \
        --threads 2 --out peer.jsonl
    lantern bench sae --shape 128,2048,32 --shape 768,24576,32 --compare-file peer.jsonl

Each shape prints one JSON line (also appended to --out): peer, d, d_sae, k, batch,
ms_per_step, tokens_per_s, steps, date — what `lantern bench sae --compare-file` reads.
"""

import argparse
import datetime
import json
import os
import time

# On a CPU sparsify must use its eager decoder (embedding_bag); Triton has no CPU driver.
os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")

import torch
from importlib.metadata import version
from sparsify import SparseCoder, SparseCoderConfig


def shape(text):
    d, m, k = (int(v) for v in text.split(","))
    return d, m, k


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=shape, action="append", help="d,d_sae,k (repeatable)")
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=5, help="timed steps")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="append the JSON lines here")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    peer = f"sparsify {version('eai-sparsify')} on torch {torch.__version__} ({a.threads} threads)"
    for d, m, k in a.shape or [(128, 2048, 32), (768, 24576, 32)]:
        torch.manual_seed(0)
        sae = SparseCoder(d, SparseCoderConfig(num_latents=m, k=k))
        opt = torch.optim.Adam(sae.parameters(), lr=2e-4 / (m / 2**14) ** 0.5)
        x = torch.randn(a.batch, d)

        def step():
            out = sae(x)
            out.fvu.backward()
            sae.remove_gradient_parallel_to_decoder_directions()
            opt.step()
            opt.zero_grad()
            sae.set_decoder_norm_to_unit_norm()

        step()
        t = time.perf_counter()
        for _ in range(a.steps):
            step()
        secs = (time.perf_counter() - t) / a.steps
        row = {
            "peer": peer,
            "d": d,
            "d_sae": m,
            "k": k,
            "batch": a.batch,
            "ms_per_step": round(secs * 1e3, 3),
            "tokens_per_s": round(a.batch / secs, 1),
            "steps": a.steps,
            "date": datetime.date.today().isoformat(),
        }
        print(json.dumps(row), flush=True)
        if a.out:
            with open(a.out, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
