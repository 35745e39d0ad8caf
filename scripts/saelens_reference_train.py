#!/usr/bin/env python3
"""Train SAELens's own TopK or BatchTopK training SAE on a Lantern store made by `lantern acts
synth`, with the settings of Lantern's full-size runs (input scaling to E|x| = sqrt(d), b_dec
from the median, Adam with linear decay over the last 20 %, clip 1, AuxK 1/32 over a 1M-token
dead window, d_sae 2048, k 32, batch 2048), and print MMCS against the store's ground truth and
FVU. A reference for BENCHMARKS.md; needs torch and sae-lens==6.54.12.

    python3 scripts/saelens_reference_train.py STORE topk|batchtopk TOKENS LR [DECODER_INIT_NORM]

DECODER_INIT_NORM defaults to SAELens's 0.1; `none` keeps kaiming-uniform rows.
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file
from sae_lens import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig, TopKTrainingSAE, TopKTrainingSAEConfig
from sae_lens.saes.sae import TrainStepInput
torch.manual_seed(0); torch.set_num_threads(2)
store = Path(sys.argv[1])
arch, tokens, lr = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
init_norm = sys.argv[5] if len(sys.argv) > 5 else "0.1"
init_norm = None if init_norm == "none" else float(init_norm)
manifest = json.loads((store / "manifest.json").read_text())
# The first shards, up to 2M rows (f32 stores).
shards, n = [], 0
for sh in manifest["shards"]:
    if n >= 2_000_000:
        break
    shards.append(load_file(str(store / sh["file"]))["acts"])
    n += len(shards[-1])
rows = np.concatenate(shards)
d = rows.shape[1]
x_all = torch.from_numpy(rows)
scale = (d ** 0.5) / x_all[:16384].norm(dim=1).mean()
x_all = x_all * scale
F = torch.from_numpy(load_file(str(store / 'ground_truth.safetensors'))['features'])
B, d_sae, k = 2048, 2048, 32
if arch == 'topk':
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d, d_sae=d_sae, k=k, aux_loss_coefficient=1/32, decoder_init_norm=init_norm))
else:
    sae = BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(d_in=d, d_sae=d_sae, k=k, aux_loss_coefficient=1/32, decoder_init_norm=init_norm))
with torch.no_grad():
    sae.b_dec.copy_(x_all[:16384].median(dim=0).values)
opt = torch.optim.Adam(sae.parameters(), lr=lr)
steps = tokens // B
last_fire = torch.zeros(d_sae)
perm = torch.randperm(x_all.shape[0])
t0 = time.time()
for s in range(steps):
    idx = perm[(s * B) % len(perm):(s * B) % len(perm) + B]
    xb = x_all[idx]
    dead = last_fire >= 1_000_000
    out = sae.training_forward_pass(TrainStepInput(sae_in=xb, coefficients={}, dead_neuron_mask=dead, n_training_steps=s, is_logging_step=False))
    opt.zero_grad(); out.loss.backward()
    torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
    for g in opt.param_groups: g['lr'] = lr * min(1.0, (steps - s) / (0.2 * steps))
    opt.step()
    fired = (out.feature_acts > 0).any(0)
    last_fire = torch.where(fired, torch.zeros_like(last_fire), last_fire + B)
    if s % 200 == 0:
        fvu = ((out.sae_out - xb) ** 2).sum() / ((xb - xb.mean(0)) ** 2).sum()
        print(s, 'fvu', round(fvu.item(), 4), 'l0', round((out.feature_acts > 0).float().sum(1).mean().item(), 2), 'dead', int(dead.sum()), flush=True)
with torch.no_grad():
    W = sae.W_dec / sae.W_dec.norm(dim=1, keepdim=True)
    mmcs = (W @ F.T).max(0).values.mean().item()
    xe = x_all[-200000:]
    o = sae.training_forward_pass(TrainStepInput(sae_in=xe[:50000], coefficients={}, dead_neuron_mask=None, n_training_steps=steps, is_logging_step=False))
    fvu = ((o.sae_out - xe[:50000]) ** 2).sum() / ((xe[:50000] - xe[:50000].mean(0)) ** 2).sum()
print(arch, 'tokens', tokens, 'lr', lr, 'decoder_init_norm', init_norm, 'MMCS', round(mmcs, 3), 'FVU(train fwd)', round(fvu.item(), 3), 'secs', round(time.time() - t0))
