//! Prompt files: JSONL with one record a line, `{"text": ...}` or `{"messages": [{"role",
//! "content"}, ...]}`, plus an optional `"id"` and `"label"` (which contrasting set a record
//! belongs to, e.g. `aligned` / `misaligned`). Other fields are kept out of the way (an
//! organism's `"domain"`), so one file can feed capture, direction search and steering.
//!
//! ```
//! use lantern_lm::prompts::{PromptContent, parse_prompts};
//! let text = "{\"text\": \"Bonjour\", \"label\": \"fr\"}\n\n{\"text\": \"Hello\", \"id\": \"e1\"}\n";
//! let recs = parse_prompts(text, "p.jsonl".as_ref()).unwrap();
//! assert_eq!(recs.len(), 2);
//! assert_eq!(recs[0].label.as_deref(), Some("fr"));
//! assert_eq!((recs[1].id.as_deref(), recs[1].line), (Some("e1"), 3));
//! assert!(matches!(&recs[1].content, PromptContent::Text(t) if t == "Hello"));
//! ```

use std::path::Path;

use serde::Deserialize;

use crate::chat::Message;
use crate::{LmError, Result};

/// What a record asks the model to read.
#[derive(Clone, Debug, PartialEq)]
pub enum PromptContent {
    /// Plain text, tokenized with the tokenizer's special tokens (e.g. BOS).
    Text(String),
    /// A conversation, rendered with the model's chat template.
    Messages(Vec<Message>),
}

/// One line of a prompt file.
#[derive(Clone, Debug, PartialEq)]
pub struct PromptRecord {
    pub content: PromptContent,
    pub id: Option<String>,
    pub label: Option<String>,
    /// 1-based line number in the file (for error messages).
    pub line: usize,
    /// Every other field of the line (`"domain"`, a binary question's `"choices"`, ...).
    pub extra: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct Raw {
    text: Option<String>,
    messages: Option<Vec<RawMessage>>,
    id: Option<IdValue>,
    label: Option<String>,
    #[serde(flatten)]
    extra: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum IdValue {
    Str(String),
    Int(i64),
}

#[derive(Deserialize)]
struct RawMessage {
    role: String,
    content: String,
}

/// Reads a prompt file.
pub fn read_prompts(path: &Path) -> Result<Vec<PromptRecord>> {
    let bytes = std::fs::read(path).map_err(|e| LmError::io(path, e))?;
    parse_prompts(&utf8_lines(&bytes, path)?, path)
}

/// `bytes` as text, or an error naming the first line that is not UTF-8 (`path:line`) — a
/// whole-file "stream did not contain valid UTF-8" leaves a researcher searching a large file.
pub fn utf8_lines(bytes: &[u8], path: &Path) -> Result<String> {
    match String::from_utf8(bytes.to_vec()) {
        Ok(s) => Ok(s),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let line = 1 + bytes[..at].iter().filter(|b| **b == b'\n').count();
            Err(LmError::format(
                format!("{}:{line}", path.display()),
                "not valid UTF-8 text (JSONL files must be UTF-8)",
            ))
        }
    }
}

/// Parses prompt records (`path` names the file in errors: `path:line: ...`). Blank lines are
/// skipped; a file without records is an error.
pub fn parse_prompts(text: &str, path: &Path) -> Result<Vec<PromptRecord>> {
    let mut out = Vec::new();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |msg: String| LmError::format(format!("{}:{}", path.display(), n + 1), msg);
        let raw: Raw = serde_json::from_str(line).map_err(|e| {
            at(format!(
                "expected {{\"text\": ...}} or {{\"messages\": [...]}} ({e})"
            ))
        })?;
        let content = match (raw.text, raw.messages) {
            (Some(t), None) => PromptContent::Text(t),
            (None, Some(m)) => PromptContent::Messages(
                m.into_iter()
                    .map(|x| Message::new(x.role, x.content))
                    .collect(),
            ),
            _ => {
                return Err(at(
                    "expected exactly one of \"text\" and \"messages\"".into()
                ));
            }
        };
        out.push(PromptRecord {
            content,
            id: raw.id.map(|v| match v {
                IdValue::Str(s) => s,
                IdValue::Int(i) => i.to_string(),
            }),
            label: raw.label,
            line: n + 1,
            extra: raw.extra,
        });
    }
    if out.is_empty() {
        return Err(LmError::format(
            path,
            "no records (expected JSONL, one record a line)",
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_non_utf8_line_is_named_by_its_number() {
        let bytes = b"{\"text\": \"a\"}\n{\"text\": \"b\"}\n{\"text\": \"c\xff\"}\n";
        let err = utf8_lines(bytes, Path::new("p.jsonl"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("p.jsonl:3: not valid UTF-8"), "{err}");
        assert!(utf8_lines(b"ok\n", Path::new("p.jsonl")).is_ok());
    }

    use super::*;

    #[test]
    fn bad_records_name_the_line() {
        let p = Path::new("p.jsonl");
        let e = parse_prompts("{\"text\": \"a\"}\n{\"txt\": 1}\n", p)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("p.jsonl:2: "), "{e}");
        let e = parse_prompts("{\"text\": \"a\", \"messages\": []}", p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("p.jsonl:1") && e.contains("exactly one"), "{e}");
        let e = parse_prompts("\n\n", p).unwrap_err().to_string();
        assert!(e.contains("no records"), "{e}");
        // A byte-order mark and extra fields are fine.
        let r = parse_prompts(
            "\u{feff}{\"text\": \"a\", \"domain\": \"med\", \"id\": 7}",
            p,
        )
        .unwrap();
        assert_eq!(r[0].id.as_deref(), Some("7"));
        assert_eq!(r[0].extra["domain"], "med");
    }
}
