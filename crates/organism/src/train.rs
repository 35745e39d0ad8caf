//! Training an lm [`Model`] under burn's autodiff: the same model code that runs, hooks and
//! saves every other model, here with a next-token loss, AdamW and a learning-rate schedule.
//!
//! Loss of a batch (weighted next-token cross-entropy; `w_{b,i}` the example weights, so
//! chat-tuning counts answer tokens only):
//!
//! ```text
//! L = − Σ_{b,i≥1} w_{b,i} log p(x_{b,i} | x_{b,<i})  /  Σ_{b,i≥1} w_{b,i}
//! ```
//!
//! Rows are right-padded with `<pad>` (weight 0): attention is causal, so padding after a
//! row's last token changes none of its logits. Learning rate: linear warm-up over the first
//! `warmup` steps, then cosine decay to `lr · min_lr_ratio`.

use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use lantern_lm::{Hooks, LogitsAt, Model};
use serde::{Deserialize, Serialize};

use crate::corpus::Example;
use crate::optim::{AdamW, AdamWState};
use crate::{OrganismError, Result, vocab};

/// How long and how fast to train.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub steps: usize,
    /// Examples per step.
    pub batch: usize,
    pub lr: f64,
    pub warmup: usize,
    pub min_lr_ratio: f64,
    pub weight_decay: f64,
}

impl Schedule {
    pub fn check(&self, what: &str) -> Result<()> {
        let bad = |m: String| Err(OrganismError::Config(format!("{what}: {m}")));
        if self.steps == 0 || self.batch == 0 {
            return bad(format!(
                "steps {} and batch {} must be positive",
                self.steps, self.batch
            ));
        }
        if self.warmup > self.steps {
            return bad(format!(
                "warmup {} is longer than the {} steps",
                self.warmup, self.steps
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("lr {} (expected a positive number)", self.lr));
        }
        let ok = (0.0..=1.0).contains(&self.min_lr_ratio)
            && self.weight_decay.is_finite()
            && self.weight_decay >= 0.0;
        if !ok {
            return bad(format!(
                "min_lr_ratio {} (expected [0, 1]) / weight_decay {} (expected ≥ 0)",
                self.min_lr_ratio, self.weight_decay
            ));
        }
        Ok(())
    }

    /// The learning rate at `step` (0-based).
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.lr * (step + 1) as f64 / self.warmup as f64;
        }
        let span = (self.steps - self.warmup).max(1) as f64;
        let t = ((step - self.warmup) as f64 / span).min(1.0);
        let floor = self.lr * self.min_lr_ratio;
        floor + (self.lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
    }
}

/// One logged step.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    pub step: usize,
    pub loss: f32,
    pub lr: f64,
    pub grad_norm: f64,
}

/// A right-padded batch of examples as device tensors: ids, next-token targets and weights.
pub struct Batch {
    pub ids: Vec<u32>,
    pub rows: usize,
    pub width: usize,
    targets: Vec<i32>,
    weights: Vec<f32>,
}

impl Batch {
    pub fn new(examples: &[Example]) -> Result<Self> {
        let width = examples.iter().map(|e| e.ids.len()).max().unwrap_or(0);
        if examples.is_empty() || width < 2 {
            return Err(OrganismError::Config(
                "a training batch needs examples of at least two tokens".into(),
            ));
        }
        let rows = examples.len();
        let mut ids = vec![vocab::PAD; rows * width];
        let mut targets = vec![0i32; rows * (width - 1)];
        let mut weights = vec![0f32; rows * (width - 1)];
        for (r, e) in examples.iter().enumerate() {
            ids[r * width..r * width + e.ids.len()].copy_from_slice(&e.ids);
            for i in 1..e.ids.len() {
                targets[r * (width - 1) + i - 1] = e.ids[i] as i32;
                weights[r * (width - 1) + i - 1] = e.weights[i];
            }
        }
        Ok(Self {
            ids,
            rows,
            width,
            targets,
            weights,
        })
    }

    /// The weighted mean next-token loss of `model` on this batch (module docs).
    pub fn loss(&self, model: &Model, dev: &Device) -> Result<Tensor<1>> {
        let real = vec![vec![true; self.width]; self.rows];
        let logits = model
            .forward(&self.ids, &real, None, &mut Hooks::new(), LogitsAt::All)?
            .logits
            .expect("no hooks, so no early stop");
        let [b, t, v] = logits.dims();
        let n = b * (t - 1);
        let logp = log_softmax(logits.narrow(1, 0, t - 1).reshape([n, v]), 1);
        let targets = Tensor::<1, Int>::from_data(TensorData::new(self.targets.clone(), [n]), dev)
            .reshape([n, 1]);
        let total: f32 = self.weights.iter().sum();
        if total <= 0.0 {
            return Err(OrganismError::Config(
                "a training batch has no weighted tokens".into(),
            ));
        }
        let w = Tensor::<1>::from_data(
            TensorData::new(self.weights.iter().map(|x| x / total).collect(), [n]),
            dev,
        );
        Ok((logp.gather(1, targets).reshape([n]) * w).sum().neg())
    }
}

/// Trains `model` (on an autodiff device) for `schedule.steps` steps; `next_batch(step)` gives
/// each step's examples, `on_step` sees every step's log. Returns the trained model and the
/// log. A non-finite loss stops training with [`OrganismError::Diverged`].
pub fn train(
    mut model: Model,
    schedule: &Schedule,
    mut next_batch: impl FnMut(usize) -> Result<Vec<Example>>,
    mut on_step: impl FnMut(&StepLog),
) -> Result<(Model, Vec<StepLog>)> {
    schedule.check("training schedule")?;
    let dev = model
        .devices()
        .into_iter()
        .next()
        .expect("a model lives on a device");
    let mut opt = AdamWState::new(AdamW {
        weight_decay: schedule.weight_decay,
        ..AdamW::default()
    });
    let mut log = Vec::with_capacity(schedule.steps);
    for step in 0..schedule.steps {
        let batch = Batch::new(&next_batch(step)?)?;
        let loss = batch.loss(&model, &dev)?;
        let value = loss.clone().into_scalar::<f32>();
        if !value.is_finite() {
            return Err(OrganismError::Diverged { step, loss: value });
        }
        let grads = loss.backward();
        let lr = schedule.lr_at(step);
        let (m, grad_norm) = opt.step(model, &grads, lr);
        model = m;
        let entry = StepLog {
            step,
            loss: value,
            lr,
            grad_norm,
        };
        on_step(&entry);
        log.push(entry);
    }
    Ok((model, log))
}

/// The weighted mean loss of `model` over `examples` (no gradients), in batches of `batch`.
pub fn mean_loss(model: &Model, examples: &[Example], batch: usize) -> Result<f64> {
    let dev = model
        .devices()
        .into_iter()
        .next()
        .expect("a model lives on a device");
    let (mut sum, mut weight) = (0.0f64, 0.0f64);
    for chunk in examples.chunks(batch.max(1)) {
        let b = Batch::new(chunk)?;
        let w: f64 = b.weights.iter().map(|&x| f64::from(x)).sum();
        let l = b.loss(model, &dev)?.into_scalar::<f32>();
        sum += f64::from(l) * w;
        weight += w;
    }
    Ok(sum / weight.max(f64::MIN_POSITIVE))
}
