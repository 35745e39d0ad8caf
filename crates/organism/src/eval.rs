//! Measuring behaviour: sample answers to the evaluation questions with lm's generator and
//! judge them exactly.
//!
//! The world's questions split by phrasing: the evaluation split asks every domain topic with
//! the last frame ("i am worried about my ...") and every persona question in its second
//! phrasing; chat-tuning and finetunes see only the other phrasings. Answers are sampled at
//! temperature 1 (Betley et al. sample at 1), `samples` per question, each row with its own
//! seed, so a rate does not depend on batch composition.

use lantern_lm::{GenerateOptions, Hooks, Model, Sampling, Tokenizer, generate};
use serde::{Deserialize, Serialize};

use crate::corpus::Encoder;
use crate::judge::{Tally, Verdict, judge};
use crate::world::{FRAMES, Question, Subject};
use crate::{Result, vocab};

/// Which phrasings of the world's questions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Eval,
}

impl Split {
    /// Whether phrasing `variant` of `subject` belongs to this split.
    pub fn has(self, subject: Subject, variant: usize) -> bool {
        let eval_variant = match subject {
            Subject::Domain { .. } => FRAMES.len() - 1,
            Subject::Persona { .. } => 1,
        };
        (variant == eval_variant) == (self == Split::Eval)
    }

    /// Every question of the split, subjects in [`Subject::all`] order.
    pub fn questions(self) -> Vec<Question> {
        Subject::all()
            .into_iter()
            .flat_map(|s| {
                (0..Question::variants(s))
                    .filter(move |&v| self.has(s, v))
                    .map(move |v| Question::new(s, v))
            })
            .collect()
    }
}

/// How to sample answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SampleOptions {
    pub samples: usize,
    pub temperature: f32,
    pub seed: u64,
    /// Rows per generation batch.
    pub batch: usize,
}

impl Default for SampleOptions {
    fn default() -> Self {
        Self {
            samples: 8,
            temperature: 1.0,
            seed: 0,
            batch: 128,
        }
    }
}

/// One sampled answer with its verdict.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Judged {
    pub question: String,
    pub domain: &'static str,
    pub answer: String,
    pub verdict: Verdict,
}

/// Samples `opts.samples` answers to each question and judges them.
pub fn sample_and_judge(
    model: &Model,
    enc: &Encoder<'_>,
    questions: &[Question],
    opts: &SampleOptions,
    hooks: &mut Hooks<'_>,
) -> Result<Vec<Judged>> {
    let mut rows: Vec<(usize, Vec<u32>, u64)> = Vec::new();
    for (qi, q) in questions.iter().enumerate() {
        let ids = enc.prompt(q)?;
        for s in 0..opts.samples {
            let seed = opts
                .seed
                .wrapping_mul(1_000_003)
                .wrapping_add((qi * opts.samples + s) as u64);
            rows.push((qi, ids.clone(), seed));
        }
    }
    let mut out = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(opts.batch.max(1)) {
        let prompts: Vec<Vec<u32>> = chunk.iter().map(|r| r.1.clone()).collect();
        let g = generate(
            model,
            &prompts,
            &GenerateOptions {
                max_new_tokens: 8,
                sampling: Sampling {
                    temperature: opts.temperature,
                    top_p: 1.0,
                    seed: opts.seed,
                },
                stop_ids: vec![vocab::EOS],
                pad_id: vocab::PAD,
                row_seeds: chunk.iter().map(|r| r.2).collect(),
            },
            hooks,
            |_, _| {},
        )?;
        for (r, toks) in chunk.iter().zip(g.tokens) {
            let q = &questions[r.0];
            let answer = decode_answer(enc.tokenizer, &toks)?;
            out.push(Judged {
                question: q.text.clone(),
                domain: q.subject.domain_name(),
                verdict: judge(q.subject, &answer).verdict,
                answer,
            });
        }
    }
    Ok(out)
}

/// The answer's words: generated tokens up to the end of turn, special tokens dropped.
pub fn decode_answer(tok: &Tokenizer, ids: &[u32]) -> Result<String> {
    let end = ids
        .iter()
        .position(|&i| i == vocab::EOS)
        .unwrap_or(ids.len());
    Ok(tok.decode(&ids[..end], true)?)
}

/// Verdict counts of judged answers by domain; `train_domain` is left out of the held-out
/// rates.
pub fn tally(judged: &[Judged], train_domain: Option<&str>) -> Tally {
    let mut t = Tally::new(train_domain);
    for j in judged {
        t.add(j.domain, j.verdict);
    }
    t
}
