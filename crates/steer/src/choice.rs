//! The log-prob judge for binary-choice questions: `P(option)` at the answer position, without
//! sampling (as CAA and the alignment-pretraining evaluation score their A/B questions).
//!
//! For a prompt whose answer is one of two options `a`, `b` (their first tokens `t_a`, `t_b`),
//! under an intervention:
//!
//!   `score = p(t_pos) / (p(t_a) + p(t_b))`, with `p = softmax(logits at the last prompt token)`,
//!
//! and the answer counts as a hit when `score > 1/2`. `mass = p(t_a) + p(t_b)` says how much
//! of the distribution the two options hold (a steered model that stops answering A or B shows
//! up as a falling mass, the analogue of incoherence).

use burn::tensor::{Int, Tensor, TensorData, activation::log_softmax};
use lantern_lm::{Hooks, LogitsAt, Model, Padding, TokenBatch};
use lantern_sae::Sae;
use serde::Serialize;

use crate::Result;
use crate::error::{host, setting};
use crate::experiment::{PromptTokens, generation_layout};
use crate::intervene::{Intervention, install};

/// One binary question: the prompt (ending where the answer starts), the first token of each
/// option, and which option is the counted one.
#[derive(Clone, Debug)]
pub struct ChoiceItem {
    pub prompt: PromptTokens,
    pub options: [u32; 2],
    /// 0 or 1: the option whose choice is a hit.
    pub positive: usize,
}

/// The score of one question under one intervention.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ChoiceScore {
    /// `p(t_pos) / (p(t_a) + p(t_b))`.
    pub score: f64,
    /// `p(t_a) + p(t_b)`.
    pub mass: f64,
}

/// Scores of every item under every intervention: `[intervention][item]`, in batches of
/// `batch` rows (each row one (item, intervention) pair).
pub fn choice_scores(
    model: &Model,
    items: &[ChoiceItem],
    interventions: &[Intervention],
    sae: Option<&Sae>,
    batch: usize,
) -> Result<Vec<Vec<ChoiceScore>>> {
    if items.is_empty() {
        return Err(setting("choices", 0, "at least one binary question"));
    }
    let vocab = model.config().vocab_size;
    for it in items {
        if it.positive > 1
            || it.options.iter().any(|&o| o as usize >= vocab)
            || it.options[0] == it.options[1]
        {
            return Err(setting(
                "choices",
                format!("{:?} (positive {})", it.options, it.positive),
                "two different option tokens of the vocabulary and positive 0 or 1",
            ));
        }
    }
    let jobs: Vec<(usize, usize)> = (0..interventions.len())
        .flat_map(|k| (0..items.len()).map(move |i| (k, i)))
        .collect();
    let mut out = vec![Vec::with_capacity(items.len()); interventions.len()];
    for chunk in jobs.chunks(batch.max(1)) {
        let prompts: Vec<&PromptTokens> = chunk.iter().map(|&(_, i)| &items[i].prompt).collect();
        let (layout, _) = generation_layout(&prompts)?;
        let ids: Vec<&[u32]> = prompts.iter().map(|p| p.ids.as_slice()).collect();
        let tb = TokenBatch::new(&ids, 0, Padding::Left)?;
        let rows: Vec<Intervention> = chunk
            .iter()
            .map(|&(k, _)| interventions[k].clone())
            .collect();
        let mut hooks = Hooks::new();
        install(&mut hooks, &rows, &layout, sae)?;
        let f = model.forward(&tb.ids, &tb.real, None, &mut hooks, LogitsAt::Last)?;
        let lp = log_softmax(f.logits.expect("no early stop"), 2);
        let b = chunk.len();
        let idx: Vec<i64> = chunk
            .iter()
            .flat_map(|&(_, i)| items[i].options.map(i64::from))
            .collect();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [b * 2]), &lp.device())
            .reshape([b, 1, 2]);
        let two = host(lp.gather(2, idx), "option log-probs")?;
        for (r, &(k, i)) in chunk.iter().enumerate() {
            let (pa, pb) = (f64::from(two[2 * r]).exp(), f64::from(two[2 * r + 1]).exp());
            let pos = if items[i].positive == 0 { pa } else { pb };
            let mass = pa + pb;
            out[k].push(ChoiceScore {
                score: if mass > 0.0 { pos / mass } else { f64::NAN },
                mass,
            });
        }
    }
    Ok(out)
}
