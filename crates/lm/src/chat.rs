//! Chat templates: conversations rendered to prompt text as Hugging Face's
//! `apply_chat_template` does, and per-token roles (prompt 0, assistant answer 1) for capture.
//!
//! Templates are Jinja, run by `minijinja` in the environment transformers sets up:
//! `trim_blocks` and `lstrip_blocks`, no trailing newline kept, the variables `messages`,
//! `add_generation_prompt`, `bos_token`, `eos_token`, `tools` and `documents` (both `none`),
//! the functions `raise_exception` and `strftime_now`, a `tojson` filter that writes like
//! Python's `json.dumps(ensure_ascii=False)`, Python string/dict methods (`.strip()`,
//! `.split()`, `.items()`, ... via `minijinja-contrib`'s `pycompat`), and `none`/`true`
//! printed as Python does (`None`/`True`). `{% generation %}` blocks (HF's assistant-mask
//! extension) render their body unchanged.
//!
//! Roles: [`ChatTemplate::render_with_spans`] finds the byte range of each assistant message's
//! content in the rendered text by rendering once more with private-use sentinel characters
//! around that content, stripping them and checking the result equals the plain rendering
//! (first around the whole content, then, for templates that trim, around the content less
//! its surrounding whitespace). [`RenderedChat::tokenize`] then labels a token 1 when its text
//! overlaps an assistant span, and also labels the end-of-turn token that immediately closes
//! the span (`<|im_end|>`, `<|eot_id|>`, ...: one of [`Tokenizer::eos_ids`]), since producing
//! it is part of the answer. Everything else, including the role header before the answer, is 0.

use std::ops::Range;
use std::path::Path;

use minijinja::value::Value;
use minijinja::{Environment, Error};

use crate::error::{LmError, Result};
use crate::tokenizer::Tokenizer;

mod jinja;

/// The name of the one template in a [`ChatTemplate`]'s environment.
const TEMPLATE: &str = "chat";
/// Marks the start of an assistant message's content while locating it.
const BEGIN: char = '\u{F0000}';
/// Marks the end of an assistant message's content while locating it.
const END: char = '\u{F0001}';

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `"system"`, `"user"`, `"assistant"`, ...
    pub role: String,
    /// The message text.
    pub content: String,
}

impl Message {
    /// A message with any role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A rendered conversation and where each assistant message's content lies in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedChat {
    /// The prompt text, exactly as `apply_chat_template(tokenize=False)` gives it.
    pub text: String,
    /// Byte range in `text` of each assistant message's content, in message order.
    pub assistant_spans: Vec<Range<usize>>,
}

/// Token ids of a rendered conversation with a role per token: 0 prompt, 1 assistant answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatTokens {
    /// Token ids, as `apply_chat_template(tokenize=True)` gives them.
    pub ids: Vec<u32>,
    /// Role per token (see the module docs).
    pub roles: Vec<u8>,
}

/// A compiled chat template with its special-token strings.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// The Jinja source, as read.
    source: String,
    bos_token: String,
    eos_token: String,
    kwargs: Vec<(String, Value)>,
    origin: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("origin", &self.origin)
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish()
    }
}

/// The longest rendered conversation accepted (a chat prompt is kilobytes).
const MAX_RENDERED: usize = 16 << 20;

/// A writer that refuses to grow past [`MAX_RENDERED`] (and remembers that it did).
struct Bounded {
    text: Vec<u8>,
    overflowed: bool,
}

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.text.len() + buf.len() > MAX_RENDERED {
            self.overflowed = true;
            return Err(std::io::Error::other("rendered text too long"));
        }
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl ChatTemplate {
    /// Compiles `source` (Jinja). `bos_token`/`eos_token` are the strings the template sees.
    pub fn new(
        source: impl Into<String>,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
    ) -> Result<Self> {
        Self::compile(
            source.into(),
            bos_token.into(),
            eos_token.into(),
            "chat template".into(),
        )
    }

    /// Reads the template from a `tokenizer_config.json` (`chat_template`: a string, or a list of
    /// `{name, template}` of which `default` is taken), falling back to a `chat_template.jinja`
    /// or `chat_template.json` beside it, as transformers does. `bos_token`/`eos_token` come from
    /// the same config (a string or `{"content": ...}`; empty when absent).
    pub fn from_tokenizer_config(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| LmError::io(path, e))?;
        let config: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| LmError::format(path, format!("expected JSON: {e}")))?;
        let token = |key: &str| {
            let value = config.get(key);
            let text = value.and_then(|v| v.as_str().or_else(|| v.get("content")?.as_str()));
            text.unwrap_or_default().to_string()
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let (source, origin) = match config.get("chat_template") {
            Some(value) => (
                pick_template(value).map_err(|msg| LmError::format(path, msg))?,
                path.to_path_buf(),
            ),
            None => {
                let jinja = dir.join("chat_template.jinja");
                let json = dir.join("chat_template.json");
                if jinja.exists() {
                    let source =
                        std::fs::read_to_string(&jinja).map_err(|e| LmError::io(&jinja, e))?;
                    (source, jinja)
                } else if json.exists() {
                    let text = std::fs::read_to_string(&json).map_err(|e| LmError::io(&json, e))?;
                    let value: serde_json::Value = serde_json::from_str(&text)
                        .map_err(|e| LmError::format(&json, format!("expected JSON: {e}")))?;
                    let template = value.get("chat_template").ok_or_else(|| {
                        LmError::format(&json, "expected a \"chat_template\" entry")
                    })?;
                    let source =
                        pick_template(template).map_err(|msg| LmError::format(&json, msg))?;
                    (source, json)
                } else {
                    return Err(LmError::NoChatTemplate {
                        path: path.to_path_buf(),
                    });
                }
            }
        };
        let origin = origin.display().to_string();
        Self::compile(source, token("bos_token"), token("eos_token"), origin)
    }

    /// The Jinja source of the template.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The `bos_token` and `eos_token` strings the template sees.
    pub fn special_tokens(&self) -> (&str, &str) {
        (&self.bos_token, &self.eos_token)
    }

    /// Names where the template came from in error messages (e.g. the GGUF path).
    pub fn with_origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = origin.into();
        self
    }

    /// Passes an extra variable to the template, like `apply_chat_template(**kwargs)` does
    /// (e.g. `enable_thinking`). JSON values become Jinja values.
    pub fn with_kwarg(mut self, name: impl Into<String>, value: &serde_json::Value) -> Self {
        self.kwargs.push((name.into(), jinja::json_to_value(value)));
        self
    }

    fn compile(
        source: String,
        bos_token: String,
        eos_token: String,
        origin: String,
    ) -> Result<Self> {
        let env = jinja::environment(TEMPLATE, &source).map_err(|e| {
            LmError::Tokenizer(format!(
                "{origin}: not a valid Jinja template: {}",
                one_line(e)
            ))
        })?;
        Ok(Self {
            env,
            source,
            bos_token,
            eos_token,
            kwargs: Vec::new(),
            origin,
        })
    }

    /// Renders `messages`; `add_generation_prompt` appends the header of an assistant turn.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let n_messages = messages.len();
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| {
                Value::from_pairs([
                    ("role", Value::from(m.role.as_str())),
                    ("content", Value::from(m.content.as_str())),
                ])
            })
            .collect();
        let mut context: Vec<(String, Value)> = vec![
            ("messages".into(), Value::from(messages)),
            ("tools".into(), Value::from(())),
            ("documents".into(), Value::from(())),
            (
                "add_generation_prompt".into(),
                Value::from(add_generation_prompt),
            ),
            ("bos_token".into(), Value::from(self.bos_token.as_str())),
            ("eos_token".into(), Value::from(self.eos_token.as_str())),
        ];
        context.extend(self.kwargs.iter().cloned());
        let template = self.env.get_template(TEMPLATE).map_err(|e| self.error(e))?;
        // Written through a bounded buffer: a template that repeats a list millions of times
        // (`{{ [x] * 5104 * 5104 }}`, found by fuzzing) stops at the bound instead of
        // formatting for minutes.
        let mut out = Bounded {
            text: Vec::new(),
            overflowed: false,
        };
        if let Err(e) = template.render_captured_to(Value::from_pairs(context), &mut out) {
            if out.overflowed {
                return Err(LmError::Tokenizer(format!(
                    "{}: renders more than {} MiB of text for {} messages",
                    self.origin,
                    MAX_RENDERED >> 20,
                    n_messages
                )));
            }
            return Err(self.error(e));
        }
        String::from_utf8(out.text)
            .map_err(|e| LmError::Tokenizer(format!("{}: renders invalid UTF-8: {e}", self.origin)))
    }

    /// Renders `messages` and locates each assistant message's content (see the module docs).
    /// Fails, rather than guess, when the template rewrites assistant content so that it cannot
    /// be found (e.g. it drops earlier turns' reasoning).
    pub fn render_with_spans(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<RenderedChat> {
        let text = self.render(messages, add_generation_prompt)?;
        let n = messages.iter().filter(|m| m.role == "assistant").count();
        if n == 0 {
            return Ok(RenderedChat {
                text,
                assistant_spans: Vec::new(),
            });
        }
        let clash = messages.iter().any(|m| m.content.contains([BEGIN, END]))
            || [&self.bos_token, &self.eos_token]
                .iter()
                .any(|t| t.contains([BEGIN, END]));
        // Sentinels already in the input could be confused with ours: then do not guess.
        let passes: &[bool] = if clash { &[] } else { &[false, true] };
        for &inside_whitespace in passes {
            let marked: Vec<Message> = messages
                .iter()
                .map(|m| match m.role.as_str() {
                    "assistant" => Message::new("assistant", mark(&m.content, inside_whitespace)),
                    _ => m.clone(),
                })
                .collect();
            let Ok(rendered) = self.render(&marked, add_generation_prompt) else {
                continue;
            };
            if let Some((stripped, spans)) = strip_markers(&rendered)
                && spans.len() == n
                && stripped == text
            {
                return Ok(RenderedChat {
                    text,
                    assistant_spans: spans,
                });
            }
        }
        Err(LmError::Tokenizer(format!(
            "{}: cannot locate the {n} assistant message(s) in the rendered chat (the template rewrites their content)",
            self.origin
        )))
    }

    fn error(&self, e: Error) -> LmError {
        LmError::Tokenizer(format!("{}: {}", self.origin, one_line(e)))
    }
}

impl RenderedChat {
    /// Token ids of the text (no special tokens added, as `apply_chat_template` does) and a role
    /// per token: 1 for tokens overlapping an assistant span and for an end-of-turn token (one
    /// of `tokenizer.eos_ids()`) right after a span, 0 otherwise.
    pub fn tokenize(&self, tokenizer: &Tokenizer) -> Result<ChatTokens> {
        let (ids, offsets) = tokenizer.encode_with_offsets(&self.text, false)?;
        let mut roles = token_roles(&offsets, &self.assistant_spans);
        for span in &self.assistant_spans {
            let next = offsets
                .iter()
                .position(|o| o.start >= span.end && o.end > o.start && !overlaps(o, span));
            if let Some(k) = next
                && offsets[k].start == span.end
                && tokenizer.eos_ids().contains(&ids[k])
            {
                roles[k] = 1;
            }
        }
        Ok(ChatTokens { ids, roles })
    }
}

/// Role per token from byte offsets: 1 when the token's bytes overlap one of `spans` (sorted,
/// disjoint byte ranges), 0 otherwise; zero-width tokens (inserted BOS) are 0.
pub fn token_roles(offsets: &[Range<usize>], spans: &[Range<usize>]) -> Vec<u8> {
    offsets
        .iter()
        .map(|token| {
            let first = spans.partition_point(|s| s.end <= token.start);
            u8::from(spans.get(first).is_some_and(|s| overlaps(token, s)))
        })
        .collect()
}

fn overlaps(a: &Range<usize>, b: &Range<usize>) -> bool {
    a.start < a.end && b.start < b.end && a.start < b.end && b.start < a.end
}

/// `content` with sentinels around it, or around its non-whitespace core.
fn mark(content: &str, inside_whitespace: bool) -> String {
    if inside_whitespace {
        let core = content.trim();
        let lead = content.len() - content.trim_start().len();
        let trail = &content[lead + core.len()..];
        format!("{}{BEGIN}{core}{END}{trail}", &content[..lead])
    } else {
        format!("{BEGIN}{content}{END}")
    }
}

/// The text without sentinels and the byte ranges they enclosed; `None` when they do not pair.
fn strip_markers(marked: &str) -> Option<(String, Vec<Range<usize>>)> {
    let mut text = String::with_capacity(marked.len());
    let mut spans = Vec::new();
    let mut open: Option<usize> = None;
    for c in marked.chars() {
        match (c, open) {
            (BEGIN, None) => open = Some(text.len()),
            (END, Some(start)) => {
                spans.push(start..text.len());
                open = None;
            }
            (BEGIN | END, _) => return None,
            _ => text.push(c),
        }
    }
    open.is_none().then_some((text, spans))
}

/// Which template of a `chat_template` entry: a string, or `[{name, template}]` → `default`.
fn pick_template(value: &serde_json::Value) -> std::result::Result<String, String> {
    if let Some(source) = value.as_str() {
        return Ok(source.to_string());
    }
    let list = value
        .as_array()
        .ok_or("expected chat_template to be a string or a list")?;
    let named = |name: &str| {
        list.iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some(name))
            .and_then(|t| t.get("template")?.as_str())
    };
    named("default")
        .or_else(|| {
            if list.len() == 1 {
                list[0].get("template")?.as_str()
            } else {
                None
            }
        })
        .map(str::to_string)
        .ok_or_else(|| "expected a chat_template named \"default\"".to_string())
}

/// An error message on one line.
fn one_line(e: impl std::fmt::Display) -> String {
    e.to_string().replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_roles_mark_overlapping_tokens_only() {
        let offsets = [0..0, 0..5, 5..6, 6..11, 11..12, 12..20];
        assert_eq!(
            token_roles(&offsets, std::slice::from_ref(&(6..12))),
            vec![0, 0, 0, 1, 1, 0]
        );
        assert_eq!(
            token_roles(&offsets, &[3..7, 15..16]),
            vec![0, 1, 1, 1, 0, 1]
        );
        assert_eq!(token_roles(&offsets, &[]), vec![0; 6]);
    }

    #[test]
    fn markers_pair_up_or_fail() {
        let marked = format!("a{BEGIN}bc{END}d{BEGIN}{END}");
        let (text, spans) = strip_markers(&marked).unwrap();
        assert_eq!((text.as_str(), spans), ("abcd", vec![1..3, 4..4]));
        assert!(strip_markers(&format!("a{BEGIN}b")).is_none());
        assert!(strip_markers(&format!("a{END}b")).is_none());
    }
}
