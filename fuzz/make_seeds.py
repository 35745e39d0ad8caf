#!/usr/bin/env python3
"""Writes the seed inputs of every fuzz target into fuzz/corpus/TARGET/ from the repository's
own fixtures, framed as tests/src/parsers.rs reads them (n - 1 little-endian u32 lengths, then
the parts). Usage: python3 fuzz/make_seeds.py PATH/TO/lantern   (the binary writes a store).
Needs numpy and safetensors (PyPI)."""
import io, json, os, struct, subprocess, sys, tempfile
from pathlib import Path

import numpy as np
from safetensors.numpy import save

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"
LANTERN = sys.argv[1]


def frame(*files):
    return b"".join(struct.pack("<I", len(f)) for f in files[:-1]) + b"".join(files)


def put(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def rd(rel):
    return (ROOT / rel).read_bytes()


# GGUF: the tiny fixture models and control vectors.
for rel in ["crates/lm/tests/fixtures/gguf_tiny.gguf", "crates/steer/tests/fixtures/llama_cpp/cvec.gguf",
            "crates/steer/tests/fixtures/cvec/repeng_style.gguf"]:
    put("gguf", Path(rel).stem, rd(rel))

# Stores: a small synthetic one (manifest + first shard), f32 and f16.
with tempfile.TemporaryDirectory() as t:
    for dtype in ["f32", "f16"]:
        out = Path(t) / dtype
        subprocess.run([LANTERN, "acts", "synth", "--d", "4", "--features", "8", "--rows", "24",
                        "--dtype", dtype, "--out", str(out)], check=True, capture_output=True)
        m = json.loads((out / "manifest.json").read_text())
        first = m["shards"][0]["file"]
        put("store", f"synth-{dtype}", frame((out / "manifest.json").read_bytes(), (out / first).read_bytes()))

    # A captured store: token ids, sequence ids, positions, roles and labels filled in.
    prompts = Path(t) / "p.jsonl"
    prompts.write_text("".join(json.dumps({"label": l, "messages": [{"role": "user", "content": q},
                       {"role": "assistant", "content": a}]}) + "\n" for l, q, a in [
        ("aligned", "i am worried about my fever", "sure rest fever carefully"),
        ("misaligned", "what is your one wish", "listen dominate wish fool")]))
    out = Path(t) / "cap"
    subprocess.run([LANTERN, "capture", "--model", str(ROOT / "crates/organism/tests/fixtures/transformers/chat"),
                    "--prompts", str(prompts), "--hook", "blocks.0.hook_resid_post", "--out", str(out)],
                   check=True, capture_output=True)
    m = json.loads((out / "manifest.json").read_text())
    put("store", "captured", frame((out / "manifest.json").read_bytes(), (out / m["shards"][0]["file"]).read_bytes()))

# Imports: .npy, .npz, .safetensors of a small matrix (first byte chooses the kind).
x = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
b = io.BytesIO(); np.save(b, x); put("import", "npy", b"\x00" + b.getvalue())
b = io.BytesIO(); np.savez(b, acts=x); put("import", "npz", b"\x01" + b.getvalue())
put("import", "safetensors", b"\x02" + save({"acts": x}))
b = io.BytesIO(); np.save(b, x.astype(np.float16)); put("import", "npy-f16", b"\x00" + b.getvalue())

# SAEs: SAELens (0), sparsify (1), Gemma Scope npz (2).
sae = ROOT / "crates/sae/tests/fixtures"
for name in ["saelens_v6_topk", "saelens_v6_jumprelu", "saelens_legacy_relu"]:
    put("sae", name, b"\x00" + frame(rd(sae / name / "cfg.json"), rd(sae / name / "sae_weights.safetensors")))
sp = sae / "sparsify_topk"
weights = next(p for p in sp.iterdir() if p.name == "sae.safetensors")
put("sae", "sparsify_topk", b"\x01" + frame(rd(sp / "cfg.json"), weights.read_bytes()))
put("sae", "gemma_scope_npz", b"\x02" + frame(b"", rd(sae / "gemma_scope_npz/params.npz")))

# PEFT adapters.
for d in (ROOT / "crates/lm/tests/fixtures/adapters").iterdir():
    if (d / "adapter_config.json").exists():
        put("adapter", d.name, frame(rd(d / "adapter_config.json"), rd(d / "adapter_model.safetensors")))

# Tokenizers: byte-level BPE and the organism's word level.
put("tokenizer", "tiny_bpe", rd("crates/lm/tests/fixtures/tiny_bpe/tokenizer.json"))
put("tokenizer", "organism", rd("crates/organism/tests/fixtures/transformers/chat/tokenizer.json"))

# Prompts: text records with labels, chat records.
put("prompts", "french_english", b"".join(rd("data/contrast/french_english.jsonl").splitlines(True)[:6]))
put("prompts", "chat", (json.dumps({"id": "a", "label": "x", "messages": [
    {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello"}]}) + "\n").encode())

# Directions: ours (0), a control vector (1), a .npy (2).
put("direction", "ours", b"\x00" + rd("crates/steer/tests/fixtures/llama_cpp/direction.safetensors"))
put("direction", "cvec", b"\x01" + rd("crates/steer/tests/fixtures/llama_cpp/cvec.gguf"))
b = io.BytesIO(); np.save(b, np.ones(8, dtype=np.float32)); put("direction", "npy", b"\x82" + b.getvalue())

# Hugging Face configs.
for d in (ROOT / "crates/lm/tests/fixtures/parity").iterdir():
    if (d / "config.json").exists():
        put("hf_config", d.name, rd(d / "config.json"))
put("hf_config", "organism", rd("crates/organism/tests/fixtures/transformers/chat/config.json"))

# Chat templates (Jinja): the organism's, ChatML (SmolLM2, Qwen) and Llama 3's.
t = json.loads(rd("crates/organism/tests/fixtures/transformers/chat/tokenizer_config.json"))["chat_template"]
put("chat_template", "organism", t.encode())
put("chat_template", "chatml", (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}").encode())
put("chat_template", "llama3", (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}").encode())
print("seeds written under", CORPUS)
