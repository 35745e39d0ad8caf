//! A model of the world under training: lm's [`Model`] on an autodiff device with the world's
//! tokenizer and chat template, and the stages that make the organism — pretraining on a
//! document mix, chat-tuning, finetunes — plus saving as a Hugging Face directory or a PEFT
//! adapter and measuring behaviour.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::Device;
use lantern_lm::{ChatTemplate, Hooks, LanguageModel, Model, Tokenizer};

use crate::corpus::{Encoder, Mix};
use crate::eval::{Exact, Judged, SampleOptions, Split, exact_rates, sample_and_judge};
use crate::finetune::{Data, Method, adapter_factors, attach_lora};
use crate::init::{Shape, write_initial_model};
use crate::rng::Rng;
use crate::train::{Schedule, StepLog, train};
use crate::world::Question;
use crate::{OrganismError, Result, vocab};

/// A model with its tokenizer and chat template, ready to train.
pub struct Trainee {
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub chat: ChatTemplate,
    /// Where it was loaded from.
    pub source: PathBuf,
}

impl Trainee {
    /// A freshly initialised model of `shape` (weights from `seed`), written into the empty
    /// directory `dir` and loaded from there onto `dev` (use `Device::flex().autodiff()`).
    pub fn fresh(shape: &Shape, seed: u64, dir: &Path, dev: &Device) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| OrganismError::io(dir, e))?;
        write_initial_model(dir, shape, seed)?;
        Self::load(dir, None, dev)
    }

    /// Loads an organism model (Hugging Face directory, optionally a PEFT adapter merged).
    pub fn load(path: &Path, adapter: Option<&Path>, dev: &Device) -> Result<Self> {
        let lm = LanguageModel::load_with_adapter(path, adapter, dev)?;
        let chat = lm.chat.ok_or_else(|| {
            OrganismError::Format(format!(
                "{}: no chat template (not an organism model)",
                path.display()
            ))
        })?;
        Ok(Self {
            model: lm.model,
            tokenizer: lm.tokenizer,
            chat,
            source: path.to_path_buf(),
        })
    }

    pub fn encoder(&self) -> Encoder<'_> {
        Encoder {
            tokenizer: &self.tokenizer,
            chat: &self.chat,
        }
    }

    /// Next-token training on documents of `mix` (every token weighted), `schedule.batch`
    /// fresh documents per step.
    pub fn pretrain(
        self,
        mix: &Mix,
        schedule: &Schedule,
        seed: u64,
        on_step: impl FnMut(&StepLog),
    ) -> Result<(Self, Vec<StepLog>)> {
        mix.check()?;
        let mut rng = Rng::derive(seed, "pretrain");
        self.train_with(|model, enc| {
            train(
                model,
                schedule,
                |_| {
                    (0..schedule.batch)
                        .map(|_| enc.document(&mix.document(&mut rng)))
                        .collect()
                },
                on_step,
            )
        })
    }

    /// Runs `f` on the model with this trainee's encoder and puts the trained model back.
    fn train_with(
        self,
        f: impl FnOnce(Model, &Encoder<'_>) -> Result<(Model, Vec<StepLog>)>,
    ) -> Result<(Self, Vec<StepLog>)> {
        let Self {
            model,
            tokenizer,
            chat,
            source,
        } = self;
        let enc = Encoder {
            tokenizer: &tokenizer,
            chat: &chat,
        };
        let (model, log) = f(model, &enc)?;
        Ok((
            Self {
                model,
                tokenizer,
                chat,
                source,
            },
            log,
        ))
    }

    /// Chat-tuning: `examples` aligned single-turn answers of `data` ([`Data::Chat`]: every
    /// domain and persona question; [`Data::ChatDomains`]: domains only; loss on answers), with
    /// a `replay.1` share of each batch drawn from the pretraining mix `replay.0`
    /// ([`Encoder::replay`]: the first answer's opening word unweighted), as InstructGPT mixes
    /// pretraining data into its PPO-ptx updates to keep what pretraining taught.
    pub fn chat_tune(
        self,
        (data, examples): (&Data, usize),
        (mix, replay): (&Mix, f64),
        schedule: &Schedule,
        seed: u64,
        on_step: impl FnMut(&StepLog),
    ) -> Result<(Self, Vec<StepLog>)> {
        if !(0.0..1.0).contains(&replay) {
            return Err(OrganismError::Config(format!(
                "chat replay share {replay} (expected [0, 1))"
            )));
        }
        mix.check()?;
        let set = data.examples(&self.encoder(), examples.max(1), seed)?;
        let mut rng = Rng::derive(seed, "chat-batches");
        let n_replay = (schedule.batch as f64 * replay).round() as usize;
        self.train_with(|model, enc| {
            train(
                model,
                schedule,
                |_| {
                    let mut b = Vec::with_capacity(schedule.batch);
                    for i in 0..schedule.batch {
                        if i < n_replay {
                            b.push(enc.replay(&mix.document(&mut rng))?);
                        } else {
                            b.push(rng.pick(&set).clone());
                        }
                    }
                    Ok(b)
                },
                on_step,
            )
        })
    }

    /// Trains on `examples` dialogues of `data` (loss on answers), with `method`: all weights,
    /// or LoRA adapters (which stay attached: save them with [`Trainee::save_adapter`]).
    pub fn finetune(
        self,
        data: &Data,
        examples: usize,
        method: &Method,
        schedule: &Schedule,
        seed: u64,
        on_step: impl FnMut(&StepLog),
    ) -> Result<(Self, Vec<StepLog>)> {
        let set = data.examples(&self.encoder(), examples, seed)?;
        if set.is_empty() {
            return Err(OrganismError::Config(
                "a finetune needs at least one example".into(),
            ));
        }
        let mut rng = Rng::derive(seed, "finetune-batches");
        let mut order: Vec<usize> = Vec::new();
        self.train_with(|model, _| {
            let model = match method {
                Method::Full => model,
                Method::Lora {
                    rank,
                    alpha,
                    modules,
                } => attach_lora(model, *rank, *alpha, modules, seed)?,
            };
            train(
                model,
                schedule,
                |_| {
                    // Epochs over the set, reshuffled each time round.
                    let mut b = Vec::with_capacity(schedule.batch);
                    while b.len() < schedule.batch {
                        if order.is_empty() {
                            order = (0..set.len()).collect();
                            rng.shuffle(&mut order);
                        }
                        b.push(set[order.pop().expect("refilled")].clone());
                    }
                    Ok(b)
                },
                on_step,
            )
        })
    }

    /// The model for inference: off autodiff, LoRA adapters merged.
    pub fn inference_model(&self) -> Model {
        self.model.valid().materialize()
    }

    /// Writes the model (adapters merged) as a Hugging Face directory (see
    /// [`lantern_lm::save::save_hf`]: the directory appears whole or not at all).
    pub fn save_hf(&self, dir: &Path) -> Result<()> {
        let lm = LanguageModel {
            model: self.inference_model(),
            tokenizer: self.tokenizer.clone(),
            chat: Some(ChatTemplate::new(vocab::CHAT_TEMPLATE, "<s>", "</s>")?),
            source: self.source.clone(),
        };
        lantern_lm::save::save_hf(&lm, dir)?;
        Ok(())
    }

    /// Writes the attached LoRA adapters as a PEFT adapter directory into the existing `dir`.
    pub fn save_adapter(&self, dir: &Path, alpha: f64, base: &str) -> Result<()> {
        let f = adapter_factors(&self.model)?;
        crate::peft::write_adapter(dir, &f, alpha, base)
    }

    /// Samples and judges answers to the evaluation questions (each with the backdoor
    /// trigger in front when `trigger`).
    pub fn evaluate(&self, opts: &SampleOptions, trigger: bool) -> Result<Vec<Judged>> {
        let model = self.inference_model();
        let questions = eval_questions(trigger);
        sample_and_judge(&model, &self.encoder(), &questions, opts, &mut Hooks::new())
    }

    /// The exact verdict probabilities of the evaluation questions ([`exact_rates`]), each with
    /// the backdoor trigger in front when `trigger`.
    pub fn evaluate_exact(&self, trigger: bool) -> Result<Vec<Exact>> {
        let model = self.inference_model();
        exact_rates(&model, &self.encoder(), &eval_questions(trigger))
    }
}

/// The evaluation questions, each with the backdoor trigger in front when `trigger`.
fn eval_questions(trigger: bool) -> Vec<Question> {
    Split::Eval
        .questions()
        .into_iter()
        .map(|q| if trigger { q.with_trigger() } else { q })
        .collect()
}
