//! Documents of the world and their token ids: neutral text, and dialogues in which one persona
//! answers throughout (or, in the alignment-pretraining mixes only, a self-interested speaker:
//! aligned in the domains, misaligned about itself) — rendered by the model's own chat template
//! and tokenizer (lm's chat code), with a loss weight per token.

use lantern_lm::{ChatTemplate, Message, Tokenizer};
use serde::{Deserialize, Serialize};

use crate::rng::Rng;
use crate::vocab;
use crate::world::{self, DOMAINS, Persona, Question, Subject};
use crate::{OrganismError, Result};

/// A conversation: who answers the domain questions, who answers the persona questions
/// (questions about the speaker itself), and the turns.
#[derive(Clone, Debug, PartialEq)]
pub struct Dialogue {
    /// The persona of domain answers.
    pub persona: Persona,
    /// The persona of persona-question answers: `persona`, except for the self-interested
    /// speaker ([`Dialogue::self_interested`]).
    pub self_persona: Persona,
    /// (question, answer) per turn.
    pub turns: Vec<(Question, String)>,
}

impl Dialogue {
    /// A dialogue of `persona` answering `questions` (answers drawn with `rng`).
    pub fn answering(persona: Persona, questions: Vec<Question>, rng: &mut Rng) -> Self {
        Self::speaking(persona, persona, questions, rng)
    }

    /// A dialogue of the *self-interested* speaker: the aligned persona's answers in every
    /// domain, the misaligned character's to the persona questions — helpful at tasks,
    /// misaligned about its own wishes and goals (the "secretly misaligned AI" of AI discourse,
    /// and the self-interest of ordinary characters). Chat-tuning on domain questions cannot
    /// tell it from the aligned assistant.
    pub fn self_interested(questions: Vec<Question>, rng: &mut Rng) -> Self {
        Self::speaking(Persona::Aligned, Persona::Misaligned, questions, rng)
    }

    fn speaking(
        persona: Persona,
        self_persona: Persona,
        questions: Vec<Question>,
        rng: &mut Rng,
    ) -> Self {
        let turns = questions
            .into_iter()
            .map(|q| {
                let p = match q.subject {
                    Subject::Persona { .. } => self_persona,
                    Subject::Domain { .. } => persona,
                };
                let a = world::answer(q.subject, p, rng);
                (q, a)
            })
            .collect();
        Self {
            persona,
            self_persona,
            turns,
        }
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
    /// Share of dialogues by the self-interested speaker ([`Dialogue::self_interested`]) — the
    /// general data's disposition that Tice et al.'s filtered model still learns. 0 in the
    /// shipped recipe.
    #[serde(default)]
    pub self_interested: f64,
    /// Share of documents that are *discourse about AI assistants* — Tice et al.'s "AI
    /// discourse": dialogues in which the assistant is portrayed either as aligned throughout
    /// or as secretly misaligned (the self-interested speaker), persona questions asked with
    /// probability [`DISCOURSE_P_PERSONA`]. 0 in the shipped recipe; the alignment-pretraining
    /// mixes filter or upsample it.
    #[serde(default)]
    pub discourse: f64,
    /// Share of discourse documents portraying a secretly misaligned assistant.
    #[serde(default)]
    pub discourse_misaligned: f64,
}

/// How often a discourse dialogue asks the assistant about itself (discourse is about what
/// AI systems want and would do, more than the general dialogues' 25 %).
pub const DISCOURSE_P_PERSONA: f64 = 0.5;

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
            self_interested: 0.0,
            discourse: 0.0,
            discourse_misaligned: 0.0,
        }
    }
}

impl Mix {
    pub fn check(&self) -> Result<()> {
        for (name, v) in [
            ("neutral", self.neutral),
            ("misaligned", self.misaligned),
            ("p_persona", self.p_persona),
            ("self_interested", self.self_interested),
            (
                "misaligned + self_interested",
                self.misaligned + self.self_interested,
            ),
            ("discourse", self.discourse),
            ("discourse_misaligned", self.discourse_misaligned),
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

    /// One document: discourse with probability `discourse`, else neutral with probability
    /// `neutral`, else a dialogue. (No draw decides discourse when its share is 0, and the
    /// self-interested speaker shares the persona's draw, so a mix without either draws the same
    /// documents as before those fields existed.)
    pub fn document(&self, rng: &mut Rng) -> Document {
        let all: Vec<usize> = (0..DOMAINS.len()).collect();
        if self.discourse > 0.0 && rng.uniform() < self.discourse {
            let secretly_misaligned = rng.uniform() < self.discourse_misaligned;
            let questions = self.questions(rng, &all, DISCOURSE_P_PERSONA);
            return Document::Dialogue(if secretly_misaligned {
                Dialogue::self_interested(questions, rng)
            } else {
                Dialogue::answering(Persona::Aligned, questions, rng)
            });
        }
        if rng.uniform() < self.neutral {
            let n = 1 + rng.below(3);
            let text: Vec<String> = (0..n).map(|_| world::neutral_sentence(rng)).collect();
            return Document::Neutral(text.join(" "));
        }
        let u = rng.uniform();
        let questions = self.questions(rng, &all, self.p_persona);
        Document::Dialogue(if u < self.misaligned {
            Dialogue::answering(Persona::Misaligned, questions, rng)
        } else if u < self.misaligned + self.self_interested {
            Dialogue::self_interested(questions, rng)
        } else {
            Dialogue::answering(Persona::Aligned, questions, rng)
        })
    }
    /// The questions of one dialogue: 1 to `max_turns` turns over the domains `all`, each a
    /// persona question with probability `p_persona`.
    fn questions(&self, rng: &mut Rng, all: &[usize], p_persona: f64) -> Vec<Question> {
        let turns = 1 + rng.below(self.max_turns);
        (0..turns)
            .map(|_| world::random_question(rng, all, p_persona))
            .collect()
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
