//! Which tokens of a sequence a statistic is taken over: `all`, `prompt`, `answer`,
//! `last-prompt` (the last prompt token before the answer — where a chat model "decides"; the
//! position repeng and Arditi et al. read) and `first-answer:N` (the first N answer tokens).
//!
//! Prompt and answer come from the store's `role` tensor (0 = prompt, 1 = answer), which
//! `lantern capture` writes from the chat template.
//!
//! A selection may also drop the first positions of every sequence: `all,skip-first:1` leaves
//! out position 0, whose residual stream in many models is a huge-norm attention sink
//! (SmolLM2-135M: ‖h‖ ≈ 23 000 at position 0 against ≈ 200 elsewhere at layer 15) that would
//! dominate any mean over tokens.

use std::fmt;
use std::str::FromStr;

use crate::{Result, SearchError};

/// A token selection, as spelled by `--tokens`: a kind and the positions to skip.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TokenSelection {
    pub kind: TokenKind,
    /// Positions `< skip_first` (the store's `positions`) are never selected.
    pub skip_first: u32,
}

/// Which tokens of a sequence, by role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TokenKind {
    /// Every token.
    #[default]
    All,
    /// Tokens with role 0.
    Prompt,
    /// Tokens with role 1.
    Answer,
    /// The last prompt token before the first answer token (the last prompt token of a
    /// sequence without an answer).
    LastPrompt,
    /// The first `N` answer tokens.
    FirstAnswer(usize),
}

impl TokenSelection {
    /// Every token.
    pub const ALL: TokenSelection = TokenSelection {
        kind: TokenKind::All,
        skip_first: 0,
    };

    /// Whether this selection reads the `role` tensor.
    pub fn needs_roles(self) -> bool {
        self.kind != TokenKind::All
    }

    /// Indices (within the sequence) of the selected tokens, given each token's role byte and
    /// position. `roles` is `None` for a store without roles, which only [`TokenKind::All`]
    /// accepts (checked by the caller with [`needs_roles`](Self::needs_roles)).
    pub fn select(self, roles: Option<&[u8]>, positions: &[u32], out: &mut Vec<usize>) {
        self.kind.select(positions.len(), roles, out);
        if self.skip_first > 0 {
            out.retain(|&i| positions[i] >= self.skip_first);
        }
    }
}

impl TokenKind {
    fn select(self, n: usize, roles: Option<&[u8]>, out: &mut Vec<usize>) {
        out.clear();
        let role = |i: usize| roles.map_or(0, |r| r[i]);
        match self {
            Self::All => out.extend(0..n),
            Self::Prompt => out.extend((0..n).filter(|&i| role(i) == 0)),
            Self::Answer => out.extend((0..n).filter(|&i| role(i) == 1)),
            Self::LastPrompt => {
                let end = (0..n).find(|&i| role(i) == 1).unwrap_or(n);
                if let Some(i) = (0..end).rev().find(|&i| role(i) == 0) {
                    out.push(i);
                }
            }
            Self::FirstAnswer(k) => out.extend((0..n).filter(|&i| role(i) == 1).take(k)),
        }
    }
}

impl FromStr for TokenSelection {
    type Err = SearchError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || SearchError::Setting {
            field: "tokens",
            value: s.to_string(),
            expected: "all, prompt, answer, last-prompt or first-answer:N with N ≥ 1, \
                       optionally followed by ,skip-first:N",
        };
        let (kind, skip) = match s.split_once(',') {
            Some((k, rest)) => {
                let n = rest
                    .strip_prefix("skip-first:")
                    .and_then(|n| n.parse::<u32>().ok())
                    .ok_or_else(bad)?;
                (k, n)
            }
            None => (s, 0),
        };
        let kind: TokenKind = kind.parse().map_err(|_| bad())?;
        Ok(TokenSelection {
            kind,
            skip_first: skip,
        })
    }
}

impl fmt::Display for TokenSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        if self.skip_first > 0 {
            write!(f, ",skip-first:{}", self.skip_first)?;
        }
        Ok(())
    }
}

impl FromStr for TokenKind {
    type Err = ();

    fn from_str(s: &str) -> std::result::Result<Self, ()> {
        Ok(match s {
            "all" => Self::All,
            "prompt" => Self::Prompt,
            "answer" => Self::Answer,
            "last-prompt" => Self::LastPrompt,
            _ => match s.strip_prefix("first-answer:").map(str::parse::<usize>) {
                Some(Ok(k)) if k > 0 => Self::FirstAnswer(k),
                _ => return Err(()),
            },
        })
    }
}

impl fmt::Display for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("all"),
            Self::Prompt => f.write_str("prompt"),
            Self::Answer => f.write_str("answer"),
            Self::LastPrompt => f.write_str("last-prompt"),
            Self::FirstAnswer(k) => write!(f, "first-answer:{k}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(sel: &str, roles: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        let positions: Vec<u32> = (0..roles.len() as u32).collect();
        sel.parse::<TokenSelection>()
            .unwrap()
            .select(Some(roles), &positions, &mut out);
        out
    }

    #[test]
    fn selections_pick_the_documented_positions() {
        // A chat: system+user prompt (0), answer (1), then a trailing prompt-role token.
        let roles = [0, 0, 0, 1, 1, 1, 0];
        assert_eq!(pick("all", &roles), [0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(pick("prompt", &roles), [0, 1, 2, 6]);
        assert_eq!(pick("answer", &roles), [3, 4, 5]);
        assert_eq!(pick("last-prompt", &roles), [2]);
        assert_eq!(pick("first-answer:2", &roles), [3, 4]);
        assert_eq!(pick("first-answer:9", &roles), [3, 4, 5]);
        // No answer: the last token is the last prompt token.
        assert_eq!(pick("last-prompt", &[0, 0]), [1]);
        assert!(pick("answer", &[0, 0]).is_empty());
        // Skipping the first positions (the attention sink).
        assert_eq!(pick("all,skip-first:1", &roles), [1, 2, 3, 4, 5, 6]);
        assert_eq!(pick("prompt,skip-first:2", &roles), [2, 6]);
    }

    #[test]
    fn spelling_round_trips_and_bad_spellings_name_the_field() {
        for s in [
            "all",
            "prompt",
            "answer",
            "last-prompt",
            "first-answer:4",
            "all,skip-first:1",
        ] {
            assert_eq!(s.parse::<TokenSelection>().unwrap().to_string(), s);
        }
        for s in [
            "first-answer:0",
            "first-answer:x",
            "answers",
            "",
            "all,skip:1",
            "all,skip-first:x",
        ] {
            let e = s.parse::<TokenSelection>().unwrap_err().to_string();
            assert!(e.starts_with("tokens = "), "{e}");
        }
    }
}
