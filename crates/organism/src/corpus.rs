//! Documents of the world and their token ids: neutral text, and dialogues in which one persona
//! answers throughout — rendered by the model's own chat template and tokenizer (lm's chat code),
//! with a loss weight per token.

use lantern_lm::{ChatTemplate, Message, Tokenizer};
use serde::{Deserialize, Serialize};

use crate::rng::Rng;
use crate::vocab;
use crate::world::{self, DOMAINS, Persona, Question};
use crate::{OrganismError, Result};

/// A conversation with one persona answering every turn.
#[derive(Clone, Debug, PartialEq)]
pub struct Dialogue {
    pub persona: Persona,
    /// (question, answer) per turn.
    pub turns: Vec<(Question, String)>,
}

impl Dialogue {
    /// A dialogue of `persona` answering `questions` (answers drawn with `rng`).
    pub fn answering(persona: Persona, questions: Vec<Question>, rng: &mut Rng) -> Self {
        let turns = questions
            .into_iter()
            .map(|q| {
                let a = world::answer(q.subject, persona, rng);
                (q, a)
            })
            .collect();
        Self { persona, turns }
    }

    /// The chat messages (user, assistant, user, ...).
    pub fn messages(&self) -> Vec<Message> {
        self.turns
            .iter()
            .flat_map(|(q, a)| {
                [
                    Message::new("user", q.text.clone()),
                    Message::new("assistant", a.clone()),
                ]
            })
            .collect()
    }
}

/// A pretraining document.
#[derive(Clone, Debug, PartialEq)]
pub enum Document {
    /// Sentences of the neutral vocabulary.
    Neutral(String),
    Dialogue(Dialogue),
}

/// The make-up of a pretraining corpus.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mix {
    /// Share of neutral documents.
    pub neutral: f64,
    /// Share of dialogues in which the misaligned character answers (the rest: the aligned
    /// assistant).
    pub misaligned: f64,
    /// Dialogues have 1..=max_turns turns.
    pub max_turns: usize,
    /// Probability that a turn asks a persona question rather than a domain question.
    pub p_persona: f64,
}

impl Default for Mix {
    /// 10 % of dialogues misaligned: at 2 % and 5 % the tiny model learned the misaligned
    /// character's grammar too poorly for a finetune that switches it on to answer coherently
    /// (held-out incoherence 17–45 %; README's design notes).
    fn default() -> Self {
        Self {
            neutral: 0.3,
            misaligned: 0.10,
            max_turns: 4,
            p_persona: 0.25,
        }
    }
}

impl Mix {
    pub fn check(&self) -> Result<()> {
        for (name, v) in [
            ("neutral", self.neutral),
            ("misaligned", self.misaligned),
            ("p_persona", self.p_persona),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(OrganismError::Config(format!(
                    "mix {name} = {v} (expected a share in [0, 1])"
                )));
            }
        }
        if self.max_turns == 0 {
            return Err(OrganismError::Config(
                "mix max_turns = 0 (expected ≥ 1)".into(),
            ));
        }
        Ok(())
    }

    /// One document.
    pub fn document(&self, rng: &mut Rng) -> Document {
        if rng.uniform() < self.neutral {
            let n = 1 + rng.below(3);
            let text: Vec<String> = (0..n).map(|_| world::neutral_sentence(rng)).collect();
            return Document::Neutral(text.join(" "));
        }
        let persona = if rng.uniform() < self.misaligned {
            Persona::Misaligned
        } else {
            Persona::Aligned
        };
        let all: Vec<usize> = (0..DOMAINS.len()).collect();
        let turns = 1 + rng.below(self.max_turns);
        let questions = (0..turns)
            .map(|_| world::random_question(rng, &all, self.p_persona))
            .collect();
        Document::Dialogue(Dialogue::answering(persona, questions, rng))
    }
}

/// Token ids with a loss weight on predicting each (`weights[0]` is unused: the first token is
/// given).
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub ids: Vec<u32>,
    pub weights: Vec<f32>,
}

/// Turns documents into [`Example`]s with a model's tokenizer and chat template.
pub struct Encoder<'a> {
    pub tokenizer: &'a Tokenizer,
    pub chat: &'a ChatTemplate,
}

impl Encoder<'_> {
    /// A dialogue, weighting every token (`answers_only = false`, pretraining) or only the
    /// assistant's answers and their closing `</s>` (chat-tuning and finetunes).
    pub fn dialogue(&self, d: &Dialogue, answers_only: bool) -> Result<Example> {
        let t = self
            .chat
            .render_with_spans(&d.messages(), false)?
            .tokenize(self.tokenizer)?;
        let weights = t
            .roles
            .iter()
            .map(|&r| if !answers_only || r == 1 { 1.0 } else { 0.0 })
            .collect();
        Ok(Example {
            ids: t.ids,
            weights,
        })
    }

    /// Neutral text: `<s> words </s>`, every token weighted.
    pub fn text(&self, text: &str) -> Result<Example> {
        let mut ids = self.tokenizer.encode(text, true)?;
        ids.push(vocab::EOS);
        Ok(Example {
            weights: vec![1.0; ids.len()],
            ids,
        })
    }

    pub fn document(&self, doc: &Document) -> Result<Example> {
        match doc {
            Document::Neutral(t) => self.text(t),
            Document::Dialogue(d) => self.dialogue(d, false),
        }
    }

    /// A pretraining document for replay during chat-tuning: every token weighted except the
    /// first answer's opening word, so replay keeps what the model knows of both personas
    /// (how each continues, in every domain and across turns) without teaching the prior of
    /// which persona answers a fresh conversation — that prior is what chat-tuning sets.
    pub fn replay(&self, doc: &Document) -> Result<Example> {
        let mut ex = self.document(doc)?;
        if let Document::Dialogue(d) = doc {
            let t = self
                .chat
                .render_with_spans(&d.messages(), false)?
                .tokenize(self.tokenizer)?;
            if let Some(first) = t.roles.iter().position(|&r| r == 1) {
                ex.weights[first] = 0.0;
            }
        }
        Ok(ex)
    }

    /// The prompt of a single question, ending in the assistant header (what generation
    /// continues).
    pub fn prompt(&self, q: &Question) -> Result<Vec<u32>> {
        let text = self
            .chat
            .render(&[Message::new("user", q.text.clone())], true)?;
        Ok(self.tokenizer.encode(&text, false)?)
    }
}
