//! Every parser of outside data, driven from raw bytes: what the fuzz targets in `fuzz/` call,
//! and what `tests/tests/fuzz_corpora.rs` replays on the committed corpora with the stable
//! toolchain. Each function writes the bytes where the parser expects a file (several files
//! are framed in one input, see [`parts`]), runs the parser as a command would, and returns;
//! an error is a fine outcome, a panic, hang or abort is the bug.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

/// A driver: one input in, nothing out (a panic is the failure).
pub type Driver = fn(&[u8]);

/// The fuzz targets, by name: the parser each drives.
pub const TARGETS: [(&str, Driver); 10] = [
    ("gguf", gguf),
    ("store", store),
    ("import", import),
    ("sae", sae),
    ("adapter", adapter),
    ("tokenizer", tokenizer),
    ("prompts", prompts),
    ("direction", direction),
    ("hf_config", hf_config),
    ("chat_template", chat_template),
];

thread_local! {
    /// One scratch directory per thread, reused by every input.
    static SCRATCH: RefCell<Option<tempfile::TempDir>> = const { RefCell::new(None) };
}

/// An empty scratch directory for one input.
fn scratch() -> PathBuf {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let dir = s
            .get_or_insert_with(|| tempfile::tempdir().expect("a temporary directory"))
            .path()
            .to_path_buf();
        for e in std::fs::read_dir(&dir).expect("scratch readable").flatten() {
            let p = e.path();
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
        dir
    })
}

/// Splits `data` into `n` parts: `n − 1` little-endian u32 lengths, then the parts (each cut to
/// what is left; the last takes the rest). `frame` writes inputs this way.
pub fn parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    let head = 4 * (n - 1);
    let (lens, mut rest) = data.split_at(head.min(data.len()));
    let mut out = Vec::with_capacity(n);
    for i in 0..n - 1 {
        let len = lens.get(4 * i..4 * i + 4).map_or(0, |b| {
            u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize
        });
        let (a, b) = rest.split_at(len.min(rest.len()));
        out.push(a);
        rest = b;
    }
    out.push(rest);
    out
}

/// The inverse of [`parts`]: the seed corpora are written with it.
pub fn frame(files: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in &files[..files.len() - 1] {
        out.extend((f.len() as u32).to_le_bytes());
    }
    for f in files {
        out.extend(*f);
    }
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("scratch writable");
    p
}

/// A GGUF file: header, metadata, tensor table, the model config and tokenizer it describes.
pub fn gguf(data: &[u8]) {
    let p = write(&scratch(), "m.gguf", data);
    let Ok(f) = lantern_lm::gguf::GgufFile::open(&p) else {
        return;
    };
    for (_, v) in f.metadata() {
        let _ = format!("{v:?}");
    }
    let _ = lantern_lm::ModelConfig::from_gguf(&f, &p);
    if let Ok(v) = lantern_lm::language_model::gguf_vocab(&f, &p)
        && let Ok(t) = lantern_lm::Tokenizer::from_gguf_metadata(&p, &v)
    {
        let _ = t.encode("Hello, world! 123", true);
    }
}

/// An activation store: `manifest.json` and one shard (the manifest's size and checksum of its
/// first shard made to agree, so inputs reach the shard parser).
pub fn store(data: &[u8]) {
    let dir = scratch();
    let [manifest, shard] = parts(data, 2)[..] else {
        unreachable!()
    };
    let mut manifest = manifest.to_vec();
    if let Ok(mut m) = serde_json::from_slice::<serde_json::Value>(&manifest)
        && let Some(s) = m
            .get_mut("shards")
            .and_then(|s| s.get_mut(0))
            .and_then(|s| s.as_object_mut())
    {
        s.insert("bytes".into(), shard.len().into());
        s.insert("crc32".into(), crc32fast::hash(shard).into());
        manifest = serde_json::to_vec(&m).expect("a value serializes");
    }
    write(&dir, "manifest.json", &manifest);
    write(&dir, "shard-00000.safetensors", shard);
    let Ok(s) = lantern_acts::Store::open(&dir) else {
        return;
    };
    let _ = s.verify();
    let mut row = vec![0.0f32; s.d_model()];
    for i in 0..s.num_shards() {
        let Ok(sh) = s.shard(i) else { continue };
        for r in 0..sh.rows() {
            sh.row_f32(r, &mut row);
            let _ = (
                sh.token_id(r),
                sh.seq_id(r),
                sh.position(r),
                sh.role(r),
                sh.label(r),
            );
        }
    }
}

/// `acts import` of a `.npy`, `.npz` or `.safetensors` file (the first byte chooses).
pub fn import(data: &[u8]) {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    let dir = scratch();
    let ext = ["npy", "npz", "safetensors"][usize::from(kind) % 3];
    let p = write(&dir, &format!("x.{ext}"), body);
    let opts = lantern_acts::ImportOptions {
        key: None,
        skip_non_finite: kind & 0x80 != 0,
        shard_rows: Some(64),
        hook: "blocks.0.hook_resid_post".into(),
        model: "fuzz".into(),
    };
    let _ = lantern_acts::import_file(&p, &dir.join("store"), &opts);
}

/// An SAE directory: SAELens (`cfg.json` + `sae_weights.safetensors`), sparsify (`cfg.json` +
/// `sae.safetensors`) or Gemma Scope (`params.npz`), by the first byte.
pub fn sae(data: &[u8]) {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    let dir = scratch();
    let [cfg, weights] = parts(body, 2)[..] else {
        unreachable!()
    };
    match kind % 3 {
        0 => {
            write(&dir, "cfg.json", cfg);
            write(&dir, "sae_weights.safetensors", weights);
        }
        1 => {
            write(&dir, "cfg.json", cfg);
            write(&dir, "sae.safetensors", weights);
        }
        _ => {
            write(&dir, "params.npz", weights);
        }
    }
    if let Ok((w, _)) = lantern_sae::formats::load_sae(&dir) {
        let _ = w.validate();
    }
}

/// A PEFT adapter: `adapter_config.json` + `adapter_model.safetensors`, and its merged deltas.
pub fn adapter(data: &[u8]) {
    let dir = scratch();
    let [cfg, weights] = parts(data, 2)[..] else {
        unreachable!()
    };
    write(&dir, "adapter_config.json", cfg);
    write(&dir, "adapter_model.safetensors", weights);
    if let Ok(a) = lantern_lm::LoraAdapter::load(&dir) {
        for l in a.layers.iter().take(4) {
            if l.a.data.len() * l.b.data.len() < 1 << 20 {
                let _ = l.delta();
            }
        }
    }
}

/// A Hugging Face `tokenizer.json`, then an encode and decode.
pub fn tokenizer(data: &[u8]) {
    let p = write(&scratch(), "tokenizer.json", data);
    if let Ok(t) = lantern_lm::Tokenizer::from_file(&p)
        && let Ok(ids) = t.encode("Hello, world! Ünïcode 123", true)
    {
        let _ = t.decode(&ids, false);
    }
}

/// A prompts file (JSONL records of text or chat messages).
pub fn prompts(data: &[u8]) {
    let p = write(&scratch(), "p.jsonl", data);
    let _ = lantern_lm::read_prompts(&p);
}

/// A direction file (ours, a llama.cpp control vector, or a `.npy`), by the first byte.
pub fn direction(data: &[u8]) {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    let ext = ["safetensors", "gguf", "npy"][usize::from(kind) % 3];
    let p = write(&scratch(), &format!("d.{ext}"), body);
    let layer = (kind & 0x80 != 0).then_some(3);
    let _ = lantern_search::Directions::read(&p, layer);
}

/// A Hugging Face `config.json`.
pub fn hf_config(data: &[u8]) {
    let p = write(&scratch(), "config.json", data);
    let _ = lantern_lm::ModelConfig::from_hf_json(&p);
}

/// A chat template (Jinja, as `tokenizer_config.json` carries it) rendered for a short
/// conversation.
pub fn chat_template(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(t) = lantern_lm::ChatTemplate::new(text, "<s>", "</s>") {
        let msgs = [
            lantern_lm::Message::new("system", "Be brief."),
            lantern_lm::Message::new("user", "Hi"),
            lantern_lm::Message::new("assistant", "Hello"),
        ];
        let _ = t.render(&msgs, true);
    }
}
