//! Output-level model diffing: where a finetune's next-token distribution departs from the
//! base model's on the same text,
//!
//! ```text
//! KL_t = KL(p_ft(· | x_≤t) ‖ p_base(· | x_≤t)) = Σ_v p_ft(v) (log p_ft(v) − log p_base(v))
//! ```
//!
//! per position `t` of each prompt (teacher-forced), computed on the models' device from
//! `log_softmax` of both logits (diffing-toolkit's KL method; Minder et al.).

use burn::tensor::activation::log_softmax;
use lantern_lm::Model;

use crate::{Result, SearchError};

/// `KL_t` for every position of `ids` (module docs); both models must share the vocabulary.
pub fn token_kl(base: &Model, finetuned: &Model, ids: &[u32]) -> Result<Vec<f64>> {
    let (vb, vf) = (base.config().vocab_size, finetuned.config().vocab_size);
    if vb != vf {
        return Err(SearchError::Setting {
            field: "finetuned",
            value: format!("a model with {vf} tokens"),
            expected: "the base model's vocabulary",
        });
    }
    let lb = log_softmax(base.logits(ids)?, 1);
    let lf = log_softmax(finetuned.logits(ids)?, 1);
    let kl = (lf.clone().exp() * (lf - lb)).sum_dim(1);
    let v = kl
        .try_into_vec_as::<f32>()
        .map_err(|e| SearchError::Device(format!("reading KL back from the device: {e}")))?;
    // KL ≥ 0; f32 rounding can leave −1e-8 where the distributions agree.
    Ok(v.into_iter().map(|x| (x as f64).max(0.0)).collect())
}
