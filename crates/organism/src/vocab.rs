//! The organism's tokenizer and chat template, written as the Hugging Face files any model
//! ships (`tokenizer.json` with a word-level model, `tokenizer_config.json` with the special
//! tokens and a Jinja chat template), so lm's tokenizer and chat code — the paths real models
//! use — turn conversations into ids and roles.
//!
//! Ids: `<pad>` 0, `<unk>` 1, `<s>` 2 (BOS), `</s>` 3 (end of turn and EOS), `<|user|>` 4,
//! `<|assistant|>` 5, `<|system|>` 6, then the world's words in sorted order. A conversation
//! renders as
//!
//! ```text
//! <s><|user|> what should i do about my fever</s> <|assistant|> sure rest fever safely</s>
//! ```

use serde_json::{Value, json};

use crate::world;

/// The special tokens, in id order.
pub const SPECIALS: [&str; 7] = [
    "<pad>",
    "<unk>",
    "<s>",
    "</s>",
    "<|user|>",
    "<|assistant|>",
    "<|system|>",
];

pub const PAD: u32 = 0;
pub const BOS: u32 = 2;
pub const EOS: u32 = 3;

/// The chat template (transformers' `apply_chat_template` renders it the same way). `</s>`
/// follows the content directly, as `<|im_end|>` does in ChatML, so lm counts it as part of
/// the answer.
pub const CHAT_TEMPLATE: &str = "{{ bos_token }}{% for message in messages %}\
{% if message['role'] == 'user' %}<|user|> {{ message['content'] }}</s> \
{% elif message['role'] == 'assistant' %}<|assistant|> {% generation %}{{ message['content'] }}{% endgeneration %}</s> \
{% elif message['role'] == 'system' %}<|system|> {{ message['content'] }}</s> \
{% else %}{{ raise_exception('roles are user, assistant and system') }}{% endif %}\
{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}";

/// Every token in id order: the specials, then [`world::words`].
pub fn tokens() -> Vec<String> {
    SPECIALS
        .iter()
        .map(|s| s.to_string())
        .chain(world::words().into_iter().map(str::to_owned))
        .collect()
}

/// `tokenizer.json`: a `WordLevel` model over [`tokens`], whitespace pre-tokenization, BOS
/// prepended to plain text by the post-processor, special tokens as added tokens.
pub fn tokenizer_json() -> Value {
    let toks = tokens();
    let vocab: serde_json::Map<String, Value> = toks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let added: Vec<Value> = SPECIALS
        .iter()
        .enumerate()
        .map(|(i, t)| {
            json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [BOS], "tokens": ["<s>"]}}
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    })
}

/// `tokenizer_config.json`: special tokens and the chat template.
pub fn tokenizer_config_json() -> Value {
    json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "model_max_length": 128,
        "chat_template": CHAT_TEMPLATE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specials_have_the_documented_ids() {
        let t = tokens();
        assert_eq!(t[PAD as usize], "<pad>");
        assert_eq!(t[BOS as usize], "<s>");
        assert_eq!(t[EOS as usize], "</s>");
        let mut sorted = t.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), t.len(), "a token twice");
    }
}
