//! Feature search: find what changed between a base model and its finetunes, and which
//! directions of the residual stream carry a concept.
//!
//! - [`adl`]: SAE-free diffing, the per-position mean difference on identical text (the
//!   activation difference lens).
//! - [`kl`]: output-level diffing, per-token KL(p_ft ‖ p_base) on the same text.
//! - [`diff`]: model diffing of SAE latents — per latent the mean activation and firing rate on
//!   base and finetuned stores, `Δ` with sequence-bootstrap intervals (Wang et al. 2025's
//!   "misaligned persona" latent is the top of this table).
//! - [`contrast`]: contrastive directions between a positive and a negative set of sequences —
//!   `mean-diff` (Soligo et al. 2025), `response-mean` (persona vectors), `paired-mean`,
//!   `pca-diff` / `pca-center` (repeng) and a logistic [`probe`].
//! - [`directions`]: the direction file (safetensors `layer.{L}` + metadata) that steering reads,
//!   and readers for llama.cpp control vectors and plain `.npy`/`.safetensors` exports.
//! - [`compare`]: cosine similarity between directions per layer, with exact random-direction
//!   p-values ([`stats`]) and a label-permutation null.
//! - [`latents`]: latents aligned with a direction, top-activating contexts ([`html`] renders
//!   them), and [`project`]ion scores per sequence.
//!
//! Everything streams an activation store sequence by sequence ([`sequences`]) in bounded
//! memory; SAE encoding runs on the SAE's device in batches.
//!
//! ```
//! use lantern_acts::{Dtype, Store, StoreMeta, StoreWriter, WriterOptions};
//! use lantern_search::{Method, ProbeOptions, SeqMeans, TokenSelection, direction};
//!
//! // Two one-token sequences per side in d = 2: positives at x = 1, negatives at x = −1.
//! let write = |dir: &std::path::Path, x: f32| -> lantern_acts::Result<Store> {
//!     let meta = StoreMeta::new(2, Dtype::F32, "blocks.0.hook_resid_post", "toy");
//!     let mut w = StoreWriter::create(dir, meta, WriterOptions::default())?;
//!     w.push(&[x, 0.5, x, -0.5], &[1, 2], &[0, 1], &[0, 0], None)?;
//!     w.finish()?;
//!     Store::open(dir)
//! };
//! let tmp = tempfile::tempdir()?;
//! let pos = write(&tmp.path().join("pos"), 1.0)?;
//! let neg = write(&tmp.path().join("neg"), -1.0)?;
//! let all = TokenSelection::ALL;
//! let (p, n) = (SeqMeans::collect(&pos, None, all)?, SeqMeans::collect(&neg, None, all)?);
//! let fit = direction(Method::MeanDiff, &p, &n, &ProbeOptions::default())?;
//! assert_eq!(fit.vector, [2.0, 0.0]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod adl;
pub mod compare;
pub mod contrast;
pub mod diff;
pub mod directions;
mod error;
pub mod html;
pub mod kl;
pub mod latents;
pub mod linalg;
pub mod probe;
pub mod project;
pub mod sequences;
pub mod stats;
pub mod tokens;

pub use compare::{
    LayerCosine, PairComparison, PermutationNull, compare_pair, layer_matrix, permutation_null,
};
pub use contrast::{Fit, Method, SeqMeans, direction};
pub use diff::{DiffOptions, DiffReport, LatentDiff, diff_latents};
pub use directions::{DirectionMeta, Directions};
pub use error::{Result, SearchError};
pub use latents::{Aligned, ContextOptions, LatentContexts, aligned_latents, top_contexts};
pub use probe::{ProbeFit, ProbeOptions};
pub use project::{Projection, project_sequences};
pub use sequences::{LayerStore, layer_stores};
pub use tokens::TokenSelection;
