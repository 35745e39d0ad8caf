//! Text ⇄ token ids: a Hugging Face `tokenizer.json`, or the vocabulary a GGUF file embeds.
//!
//! [`Tokenizer`] wraps the `tokenizers` crate, so a `tokenizer.json` behaves exactly as in
//! Python. A GGUF has no `tokenizer.json`; it stores llama.cpp's description of the vocabulary
//! under `tokenizer.ggml.*` keys, which [`GgufVocab`] holds as plain values.
//! [`Tokenizer::from_gguf_metadata`] rebuilds the equivalent byte-level BPE tokenizer from it:
//!
//! * the vocabulary and merges as the file lists them;
//! * `tokenizer.ggml.pre` picks the pre-tokenizer split regexes, following llama.cpp's
//!   `llama-vocab.cpp` (each regex splits the text in turn, matches and gaps both kept, then
//!   bytes are mapped to the GPT-2 byte alphabet);
//! * tokens typed control (3) become special tokens and user-defined ones (4) plain added
//!   tokens, so `<|im_start|>` in a prompt is one id, as in llama.cpp and transformers;
//! * `add_bos`/`add_eos` become a post-processor, applied when `encode(.., add_special: true)`.
//!
//! Where transformers' own GGUF conversion differs from llama.cpp (it has no split table for
//! e.g. `smollm`, so it drops that vocabulary's digit split), we follow llama.cpp, which is
//! what the file's author tokenized with; `tests/fixtures/make_tokenizer_fixtures.py` records
//! both.
//!
//! Stop ids ([`Tokenizer::eos_ids`]): the declared EOS first, then every *special* token
//! whose text is one of llama.cpp's end-of-generation names (`<|im_end|>`, `<|eot_id|>`,
//! `<|endoftext|>`, `<end_of_turn>`, ...), as llama.cpp does, so a chat model stops at its
//! end-of-turn token even when its metadata names a different EOS.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::{SpecialToken, TemplateProcessing};
use tokenizers::{
    AddedToken, DecoderWrapper, ModelWrapper, NormalizerWrapper, PostProcessorWrapper,
    PreTokenizerWrapper, SplitDelimiterBehavior,
};

use crate::error::{LmError, Result};

/// GPT-2's split regex (HF `ByteLevel` with `use_regex`), as llama.cpp applies it.
const GPT2_SPLIT: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Llama 3's split regex (from its `tokenizer.json`).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen 2's split regex: Llama 3's with single digits.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Mistral's Tekken split regex.
const TEKKEN_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// GPT-4o's split regex (also Llama 4).
const GPT4O_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Token texts llama.cpp treats as end of generation when they are special tokens.
const END_OF_GENERATION: &[&str] = &[
    "<|im_end|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end|>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<end_of_turn>",
    "<|return|>",
    "<EOT>",
];

/// The `tokenizer.ggml.*` metadata of a GGUF file, as plain values.
#[derive(Debug, Clone, Default)]
pub struct GgufVocab {
    /// `tokenizer.ggml.model`: only `"gpt2"` (byte-level BPE) is supported.
    pub model: String,
    /// `tokenizer.ggml.pre`: the pre-tokenizer name (`"smollm"`, `"llama-bpe"`, `"qwen2"`, ...).
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`, indexed by id.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.merges`, each `"left right"`, best first.
    pub merges: Vec<String>,
    /// `tokenizer.ggml.token_type`: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused,
    /// 6 byte. Empty when absent.
    pub token_types: Vec<i32>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos: Option<u32>,
    /// `tokenizer.ggml.padding_token_id`.
    pub pad: Option<u32>,
    /// `tokenizer.ggml.unknown_token_id`.
    pub unk: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`; `None` (key absent) means llama.cpp's default for the
    /// pre-tokenizer (true for the Llama 3 family, false otherwise).
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`; `None` means false.
    pub add_eos: Option<bool>,
}

/// A tokenizer with the model's special ids.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    source: PathBuf,
    bos: Option<u32>,
    eos: Vec<u32>,
    pad: Option<u32>,
    unk: Option<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("source", &self.source)
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("pad", &self.pad)
            .finish()
    }
}

/// A `TemplateProcessing` post-processor (alone or in a `Sequence`) may only name special
/// tokens its `special_tokens` defines.
fn check_templates(pp: &serde_json::Value) -> std::result::Result<(), String> {
    match pp["type"].as_str() {
        Some("Sequence") => {
            for p in pp["processors"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                check_templates(p)?;
            }
        }
        Some("TemplateProcessing") => {
            for part in ["single", "pair"] {
                for piece in pp[part].as_array().map(Vec::as_slice).unwrap_or_default() {
                    let Some(id) = piece["SpecialToken"]["id"].as_str() else {
                        continue;
                    };
                    if pp["special_tokens"].get(id).is_none() {
                        return Err(format!(
                            "post_processor: the {part} template uses special token {id:?}, \
                             which its special_tokens does not define"
                        ));
                    }
                }
            }
        }
        _ => {}
    }
    Ok(())
}

impl Tokenizer {
    /// Loads a Hugging Face `tokenizer.json`. BOS, EOS, PAD and UNK come from a
    /// `tokenizer_config.json` beside it when there is one (plus `eos_token_id` of a
    /// `generation_config.json`); whether BOS is prepended is the post-processor's business.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if let Err(e) = std::fs::metadata(path) {
            return Err(LmError::io(path, e));
        }
        let text = std::fs::read_to_string(path).map_err(|e| LmError::io(path, e))?;
        // JSON syntax and the post-processor's template first: on a syntax error inside
        // "decoder", or a template naming a special token it does not define, the tokenizers
        // library panics (at load, or at the first encode) instead of returning an error.
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| LmError::format(path, format!("not valid JSON: {e}")))?;
        check_templates(&json["post_processor"]).map_err(|m| LmError::format(path, m))?;
        let inner = crate::guard::catch(|| tokenizers::Tokenizer::from_str(&text))
            .map_err(|p| {
                LmError::format(path, format!("the tokenizers library failed on it: {p}"))
            })?
            .map_err(|e| {
                LmError::format(path, format!("not a valid tokenizer.json: {}", one_line(e)))
            })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let config = read_json_if_present(&dir.join("tokenizer_config.json"))?;
        let generation = read_json_if_present(&dir.join("generation_config.json"))?;
        let id_of = |key: &str| {
            let value = config.as_ref()?.get(key)?;
            let text = value.as_str().or_else(|| value.get("content")?.as_str())?;
            inner.token_to_id(text)
        };
        let mut declared_eos: Vec<u32> = id_of("eos_token").into_iter().collect();
        if let Some(ids) = generation.as_ref().and_then(|g| g.get("eos_token_id")) {
            let ids = ids.as_array().cloned().unwrap_or_else(|| vec![ids.clone()]);
            declared_eos.extend(ids.iter().filter_map(|v| v.as_u64()).map(|v| v as u32));
        }
        let (bos, pad, unk) = (id_of("bos_token"), id_of("pad_token"), id_of("unk_token"));
        Ok(Self::assemble(inner, path, bos, &declared_eos, pad, unk))
    }

    /// Builds the tokenizer a GGUF file describes. `path` is the GGUF file, used in errors.
    pub fn from_gguf_metadata(path: impl AsRef<Path>, vocab: &GgufVocab) -> Result<Self> {
        let path = path.as_ref();
        let bad = |msg: String| LmError::format(path, msg);
        if vocab.model != "gpt2" {
            return Err(LmError::Unsupported {
                path: path.to_path_buf(),
                what: format!(
                    "tokenizer.ggml.model '{}' (only 'gpt2', byte-level BPE, is supported)",
                    vocab.model
                ),
            });
        }
        let n = vocab.tokens.len();
        if n == 0 {
            return Err(bad("tokenizer.ggml.tokens is empty".into()));
        }
        if !vocab.token_types.is_empty() && vocab.token_types.len() != n {
            return Err(bad(format!(
                "tokenizer.ggml.token_type has {} entries, expected one per token ({n})",
                vocab.token_types.len()
            )));
        }
        for (key, id) in [
            ("bos_token_id", vocab.bos),
            ("eos_token_id", vocab.eos),
            ("padding_token_id", vocab.pad),
            ("unknown_token_id", vocab.unk),
        ] {
            if let Some(id) = id.filter(|&id| id as usize >= n) {
                return Err(bad(format!(
                    "tokenizer.ggml.{key} = {id} is outside the vocabulary of {n} tokens"
                )));
            }
        }
        let pre = vocab.pre.as_deref().unwrap_or("default");
        let (splits, llama3_family) =
            pre_tokenizer_splits(pre).ok_or_else(|| LmError::Unsupported {
                path: path.to_path_buf(),
                what: format!("tokenizer.ggml.pre '{pre}'"),
            })?;

        // Duplicate token texts: the last id wins, as in llama.cpp's `token_to_id`.
        let ids: tokenizers::models::bpe::Vocab = vocab
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let mut merges = Vec::with_capacity(vocab.merges.len());
        for (i, merge) in vocab.merges.iter().enumerate() {
            let (a, b) = merge.split_once(' ').ok_or_else(|| {
                bad(format!(
                    "tokenizer.ggml.merges[{i}] = {merge:?}, expected \"left right\""
                ))
            })?;
            merges.push((a.to_string(), b.to_string()));
        }
        let bpe = BPE::builder()
            .vocab_and_merges(ids, merges)
            .ignore_merges(llama3_family)
            .build()
            .map_err(|e| {
                bad(format!(
                    "inconsistent vocabulary and merges: {}",
                    one_line(e)
                ))
            })?;

        let mut pieces: Vec<PreTokenizerWrapper> = Vec::with_capacity(splits.len() + 1);
        for regex in splits {
            let split = Split::new(
                SplitPattern::Regex(regex.to_string()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| LmError::Tokenizer(format!("split regex {regex:?}: {}", one_line(e))))?;
            pieces.push(split.into());
        }
        pieces.push(ByteLevel::new(false, true, false).into());

        let mut inner = tokenizers::Tokenizer::new(ModelWrapper::from(bpe));
        inner
            .with_normalizer(None::<NormalizerWrapper>)
            .with_pre_tokenizer(Some(Sequence::new(pieces)))
            .with_decoder(Some(DecoderWrapper::from(ByteLevel::default())));

        let token_type = |i: usize| vocab.token_types.get(i).copied().unwrap_or(1);
        let added = |kind: i32, special: bool| -> Vec<AddedToken> {
            (0..n)
                .filter(|&i| token_type(i) == kind)
                .map(|i| AddedToken::from(vocab.tokens[i].clone(), special).normalized(false))
                .collect()
        };
        inner.add_special_tokens(&added(3, true));
        inner.add_tokens(&added(4, false));

        let add_bos = vocab.add_bos.unwrap_or(llama3_family);
        let add_eos = vocab.add_eos.unwrap_or(false);
        if add_bos || add_eos {
            let mut specials = Vec::new();
            for (wanted, name, id) in [(add_bos, "bos", vocab.bos), (add_eos, "eos", vocab.eos)] {
                if !wanted {
                    continue;
                }
                let id = id.ok_or_else(|| {
                    bad(format!(
                        "tokenizer.ggml.add_{name}_token is set but {name}_token_id is missing"
                    ))
                })?;
                let text = vocab.tokens[id as usize].clone();
                specials.push(
                    SpecialToken::new(name.to_string(), vec![id], vec![text])
                        .map_err(|e| LmError::Tokenizer(one_line(e)))?,
                );
            }
            // `bos $A eos`, with whichever of bos/eos is wanted; pairs repeat it for `$B`.
            let wrap = |sequence: &str| {
                let mut pieces = Vec::new();
                if add_bos {
                    pieces.push("bos".to_string());
                }
                pieces.push(sequence.to_string());
                if add_eos {
                    pieces.push("eos".to_string());
                }
                pieces
            };
            let pair: Vec<String> = wrap("$A").into_iter().chain(wrap("$B:1")).collect();
            let processor = TemplateProcessing::builder()
                .try_single(wrap("$A"))
                .and_then(|b| b.try_pair(pair))
                .map_err(LmError::Tokenizer)?
                .special_tokens(specials)
                .build()
                .map_err(|e| LmError::Tokenizer(format!("post-processor: {}", one_line(e))))?;
            inner.with_post_processor(Some(PostProcessorWrapper::from(processor)));
        }
        let declared_eos: Vec<u32> = vocab.eos.into_iter().collect();
        Ok(Self::assemble(
            inner,
            path,
            vocab.bos,
            &declared_eos,
            vocab.pad,
            vocab.unk,
        ))
    }

    fn assemble(
        inner: tokenizers::Tokenizer,
        source: &Path,
        bos: Option<u32>,
        declared_eos: &[u32],
        pad: Option<u32>,
        unk: Option<u32>,
    ) -> Self {
        let mut eos: Vec<u32> = Vec::new();
        let specials = inner.get_added_vocabulary();
        let found = END_OF_GENERATION
            .iter()
            .filter(|t| specials.is_special_token(t))
            .filter_map(|t| inner.token_to_id(t));
        for id in declared_eos.iter().copied().chain(found) {
            if !eos.contains(&id) {
                eos.push(id);
            }
        }
        Self {
            inner,
            source: source.to_path_buf(),
            bos,
            eos,
            pad,
            unk,
        }
    }

    /// The first `max_tokens` ids of `text` (as [`Tokenizer::encode`] then truncate), without
    /// tokenizing all of a very long text: a prefix of `max(64 KiB, 64·max_tokens)` bytes is
    /// tokenized first, and used when it yields well over `max_tokens` ids — tokenization is
    /// local, so only the last few tokens before the cut can differ from the whole text's.
    /// Otherwise the whole text is tokenized.
    pub fn encode_prefix(
        &self,
        text: &str,
        add_special: bool,
        max_tokens: usize,
    ) -> Result<Vec<u32>> {
        const MARGIN: usize = 16;
        let limit = (64 * max_tokens).max(1 << 16);
        if text.len() > limit {
            let cut = text.floor_char_boundary(limit);
            let mut ids = self.encode(&text[..cut], add_special)?;
            if ids.len() > max_tokens + MARGIN {
                ids.truncate(max_tokens);
                return Ok(ids);
            }
        }
        let mut ids = self.encode(text, add_special)?;
        ids.truncate(max_tokens);
        Ok(ids)
    }

    /// Token ids of `text`. Special-token texts (`<|im_start|>`) always become their single id;
    /// `add_special` applies the post-processor (e.g. a BOS the model wants prepended).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        Ok(self.encoding(text, add_special)?.get_ids().to_vec())
    }

    /// Token ids of `text` and, per token, the byte range of `text` it covers (empty for
    /// tokens the post-processor inserted).
    pub fn encode_with_offsets(
        &self,
        text: &str,
        add_special: bool,
    ) -> Result<(Vec<u32>, Vec<Range<usize>>)> {
        let encoding = self.encoding(text, add_special)?;
        let offsets = encoding.get_offsets().iter().map(|&(a, b)| a..b).collect();
        Ok((encoding.get_ids().to_vec(), offsets))
    }

    fn encoding(&self, text: &str, add_special: bool) -> Result<tokenizers::Encoding> {
        crate::guard::catch(|| self.inner.encode(text, add_special))
            .map_err(|p| self.error(format!("the tokenizers library failed to encode: {p}")))?
            .map_err(|e| self.error(format!("cannot encode text: {}", one_line(e))))
    }

    /// The text of `ids`; `skip_special` drops special tokens. Unknown ids are an error.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        if let Some(&bad) = ids.iter().find(|&&id| self.inner.id_to_token(id).is_none()) {
            return Err(self.error(format!(
                "cannot decode id {bad}: expected an id below {}",
                self.vocab_size()
            )));
        }
        crate::guard::catch(|| self.inner.decode(ids, skip_special))
            .map_err(|p| self.error(format!("the tokenizers library failed to decode: {p}")))?
            .map_err(|e| self.error(format!("cannot decode ids: {}", one_line(e))))
    }

    /// The id of a token as the vocabulary spells it (`"Ġthe"`, `"<|im_end|>"`).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The vocabulary spelling of an id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Whether `id` is a special token (dropped by `decode(.., skip_special: true)`).
    pub fn is_special(&self, id: u32) -> bool {
        self.inner
            .id_to_token(id)
            .is_some_and(|t| self.inner.get_added_vocabulary().is_special_token(&t))
    }

    /// Beginning-of-sequence id, if the model declares one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// Ids that end generation: the declared EOS first, then the special end-of-turn tokens
    /// present (see the module docs).
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos
    }

    /// Padding id, if declared.
    pub fn pad_id(&self) -> Option<u32> {
        self.pad
    }

    /// Unknown-token id, if declared.
    pub fn unk_id(&self) -> Option<u32> {
        self.unk
    }

    /// Number of ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The file this tokenizer came from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// A detokenizer for generation: push ids one at a time, get the text they complete.
    pub fn stream_decoder(&self, skip_special: bool) -> StreamDecoder<'_> {
        StreamDecoder {
            tokenizer: self,
            stream: self.inner.decode_stream(skip_special),
        }
    }

    fn error(&self, msg: String) -> LmError {
        LmError::Tokenizer(format!("tokenizer {}: {msg}", self.source.display()))
    }
}

/// Incremental detokenizer (see [`Tokenizer::stream_decoder`]). A token that ends inside a
/// multi-byte character yields nothing until the character is complete.
pub struct StreamDecoder<'a> {
    tokenizer: &'a Tokenizer,
    stream: tokenizers::DecodeStream<
        'a,
        ModelWrapper,
        NormalizerWrapper,
        PreTokenizerWrapper,
        PostProcessorWrapper,
        DecoderWrapper,
    >,
}

impl StreamDecoder<'_> {
    /// Appends `id`; returns the newly completed text, or `None` while a character is partial.
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        if self.tokenizer.id_to_token(id).is_none() {
            return Err(self.tokenizer.error(format!(
                "cannot decode id {id}: expected an id below {}",
                self.tokenizer.vocab_size()
            )));
        }
        self.stream.step(id).map_err(|e| {
            self.tokenizer
                .error(format!("stream decode: {}", one_line(e)))
        })
    }
}

/// Split regexes for a `tokenizer.ggml.pre` name, applied in order, and whether the name is of
/// the Llama 3 family (merges ignored for whole-word tokens, BOS added by default). From
/// llama.cpp's `llama-vocab.cpp`; the Llama 3 / Qwen 2 / Tekken / GPT-4o regexes are the
/// `tokenizer.json` originals, which llama.cpp rewrites only for its own regex engine.
fn pre_tokenizer_splits(pre: &str) -> Option<(Vec<&'static str>, bool)> {
    let splits =
        match pre {
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral"
            | "midm-2.0" | "lfm2" => return Some((vec![LLAMA3_SPLIT], true)),
            "dbrx" | "smaug-bpe" | "chatglm-bpe" => vec![LLAMA3_SPLIT],
            "qwen2" | "deepseek-r1-qwen" | "megrez" | "stablelm2" | "hunyuan" => vec![QWEN2_SPLIT],
            "tekken" => vec![TEKKEN_SPLIT],
            "gpt-4o" | "llama4" | "minimax-m2" => vec![GPT4O_SPLIT],
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone"
            | "minerva-7b" => vec![r"\p{N}", GPT2_SPLIT],
            "gpt-2" | "phi-2" | "roberta-bpe" | "mpt" | "olmo" | "jais" | "trillion"
            | "gigachat" | "jina-es" | "jina-de" | "jina-v1-en" | "jina-v2-es" | "jina-v2-de"
            | "jina-v2-code" => vec![GPT2_SPLIT],
            "falcon" => vec![r"[\p{P}\$\+<=>\^~\|`]+", GPT2_SPLIT, "[0-9][0-9][0-9]"],
            "bloom" | "poro-chat" | "gpt3-finnish" => vec![r" ?[^(\s|.,!?…。，、।۔،)]+"],
            "viking" => vec![r" ?[^(\s|.,!?…。，、।۔،)]+", r"\p{N}"],
            "default" => vec![
                r"[\p{P}\$\+<=>\^~\|]+",
                GPT2_SPLIT,
                r"\p{N}+",
                "[0-9][0-9][0-9]",
            ],
            _ => return None,
        };
    Some((splits, false))
}

fn read_json_if_present(path: &Path) -> Result<Option<serde_json::Value>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| LmError::format(path, format!("expected JSON: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LmError::io(path, e)),
    }
}

/// An error message on one line.
fn one_line(e: impl std::fmt::Display) -> String {
    e.to_string().replace('\n', " ")
}
