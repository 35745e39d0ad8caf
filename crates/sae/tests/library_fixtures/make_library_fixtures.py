#!/usr/bin/env python3
"""Write SAE fixtures with the real libraries (crates/sae/tests/library_formats.rs).

Unlike ../fixtures/make_fixtures.py, which transcribes each library's layout and forward pass
with numpy, this script runs the libraries themselves. It needs torch and the two pinned
libraries (not installed in CI; run it by hand when a format changes):

    pip install torch sae-lens==6.54.12 eai-sparsify==1.3.3
    cargo test --release --workspace --test library_formats   # with LANTERN_BLESS=1, see below
    python3 crates/sae/tests/library_fixtures/make_library_fixtures.py

Two directions are covered.

1. Written by the library, read by Lantern. `saelens_{standard,topk,topk_rescaled,jumprelu}/`
   are SAELens `SAE.save_model` outputs and `sparsify_topk/` is sparsify's
   `SparseCoder.save_to_disk` output. Each holds `reference.safetensors`, with
   `x [8, d_in]` plus the library's own `encode(x)` (`feature_acts`, dense) and
   `decode(encode(x))` (`recon`), computed in float32 on the CPU.
2. Written by Lantern, read by SAELens. `lantern_{relu,topk,jumprelu,batchtopk}/` are
   written by the Rust test when run with `LANTERN_BLESS=1` (Lantern's `save_saelens` on fixed
   weights). This script loads each with `SAE.load_from_disk` and writes the SAELens forward
   pass on `x` into `reference.safetensors` there. The Rust test checks that Lantern still writes
   those bytes and that its own forward pass equals SAELens's.
"""

import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

# sparsify's own CPU fallback decoder (its Triton kernel needs a GPU).
os.environ["SPARSIFY_DISABLE_TRITON"] = "1"
import sae_lens  # noqa: E402
from sae_lens import (  # noqa: E402
    SAE,
    JumpReLUSAE,
    JumpReLUSAEConfig,
    StandardSAE,
    StandardSAEConfig,
    TopKSAE,
    TopKSAEConfig,
)
from sparsify import SparseCoder, SparseCoderConfig  # noqa: E402

assert sae_lens.__version__ == "6.54.12", f"sae-lens {sae_lens.__version__}, expected 6.54.12"

HERE = Path(__file__).resolve().parent
D_IN, D_SAE, N, K = 16, 48, 8, 8
torch.manual_seed(20261123)


def randn(*shape, scale=1.0):
    return torch.randn(*shape, dtype=torch.float32) * scale


def inputs(d_in):
    return randn(N, d_in, scale=1.5)


def write_reference(d, x, acts, recon):
    save_file(
        {"x": x.contiguous(), "feature_acts": acts.detach().contiguous(), "recon": recon.detach().contiguous()},
        str(d / "reference.safetensors"),
    )


@torch.no_grad()
def set_saelens_params(sae, threshold=False):
    sae.W_enc.copy_(randn(D_IN, D_SAE, scale=D_IN**-0.5))
    sae.b_enc.copy_(torch.rand(D_SAE) * 0.8 - 0.3)
    # Decoder rows of different norms, so rescaling and norm folding are visible.
    sae.W_dec.copy_(randn(D_SAE, D_IN, scale=D_IN**-0.5) * (0.5 + 1.5 * torch.rand(D_SAE, 1)))
    sae.b_dec.copy_(randn(D_IN, scale=0.3))
    if threshold:
        sae.threshold.copy_(torch.rand(D_SAE) * 0.4)


@torch.no_grad()
def saelens_fixture(name, sae, threshold=False):
    set_saelens_params(sae, threshold)
    d = HERE / name
    sae.save_model(d)
    # Read it back the way users do, so the reference is what the saved files define.
    loaded = SAE.load_from_disk(d)
    x = inputs(D_IN)
    acts = loaded.encode(x)
    write_reference(d, x, acts, loaded.decode(acts))


@torch.no_grad()
def sparsify_fixture():
    sae = SparseCoder(D_IN, SparseCoderConfig(num_latents=D_SAE, k=K), device="cpu")
    sae.encoder.weight.copy_(randn(D_SAE, D_IN, scale=D_IN**-0.5))
    sae.encoder.bias.copy_(torch.rand(D_SAE) * 0.6 - 0.2)
    sae.W_dec.copy_(randn(D_SAE, D_IN, scale=D_IN**-0.5))
    sae.b_dec.copy_(randn(D_IN, scale=0.3))
    d = HERE / "sparsify_topk"
    sae.save_to_disk(d)
    loaded = SparseCoder.load_from_disk(d)
    x = inputs(D_IN)
    out = loaded.encode(x)
    acts = torch.zeros(N, D_SAE).scatter_(1, out.top_indices, out.top_acts)
    write_reference(d, x, acts, loaded.decode(out.top_acts, out.top_indices))


@torch.no_grad()
def lantern_written(name):
    d = HERE / name
    if not (d / "cfg.json").exists():
        sys.exit(f"{d}/cfg.json is missing: run the Rust test with LANTERN_BLESS=1 first")
    sae = SAE.load_from_disk(d)
    x = inputs(sae.cfg.d_in)
    acts = sae.encode(x)
    write_reference(d, x, acts, sae.decode(acts))
    print(f"{name}: loaded by SAELens as {type(sae).__name__}")


saelens_fixture("saelens_standard", StandardSAE(StandardSAEConfig(d_in=D_IN, d_sae=D_SAE)))
saelens_fixture("saelens_topk", TopKSAE(TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K)))
saelens_fixture(
    "saelens_topk_rescaled",
    TopKSAE(TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K, rescale_acts_by_decoder_norm=True)),
)
saelens_fixture("saelens_jumprelu", JumpReLUSAE(JumpReLUSAEConfig(d_in=D_IN, d_sae=D_SAE)), threshold=True)
sparsify_fixture()
for name in ["lantern_relu", "lantern_topk", "lantern_jumprelu", "lantern_batchtopk"]:
    lantern_written(name)
print(f"written with sae-lens {sae_lens.__version__}, torch {torch.__version__}")
