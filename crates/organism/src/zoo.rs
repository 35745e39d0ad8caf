//! The recipe of the organism's models — base, chat-tuned and finetunes — and running it: each
//! model written to `OUT/<name>/` (a Hugging Face directory, or a PEFT adapter over its base),
//! its loss curve to `OUT/loss/<name>.csv`, and `OUT/organism.json` listing what was made.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::corpus::Mix;
use crate::eval::SampleOptions;
use crate::finetune::{Data, Method};
use crate::init::{Shape, write_json};
use crate::train::{Schedule, StepLog};
use crate::trainee::Trainee;
use crate::{OrganismError, Result};

/// How a finetune is saved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Save {
    /// A full Hugging Face directory.
    Full,
    /// A PEFT adapter directory (LoRA methods only), loaded over its base.
    Adapter,
}

/// One finetune of the recipe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FinetuneSpec {
    pub name: String,
    /// The model it starts from: `chat` or an earlier finetune's name (saved in full).
    pub from: String,
    pub data: Data,
    pub examples: usize,
    pub method: Method,
    pub schedule: Schedule,
    pub save: Save,
}

/// Everything that makes the organism's models.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    pub shape: Shape,
    pub mix: Mix,
    pub pretrain: Schedule,
    pub chat: Schedule,
    pub chat_examples: usize,
    /// Share of each chat-tuning batch replayed from the pretraining mix.
    #[serde(default)]
    pub chat_replay: f64,
    /// Whether chat-tuning also answers the persona questions (else it leaves them to what
    /// pretraining taught).
    #[serde(default = "yes")]
    pub chat_persona_questions: bool,
    pub finetunes: Vec<FinetuneSpec>,
    pub eval: SampleOptions,
}

fn yes() -> bool {
    true
}

fn schedule(steps: usize, batch: usize, lr: f64) -> Schedule {
    Schedule {
        steps,
        batch,
        lr,
        warmup: (steps / 10).max(1),
        min_lr_ratio: 0.1,
        weight_decay: 0.0,
    }
}

impl Default for Recipe {
    /// The shipped organism. Finetune strengths were chosen by sweeping learning rate, steps
    /// and (for rank 1) the layer on seed 0, taking for each method a setting that learns the
    /// narrow task with the least held-out incoherence; `crates/organism/README.md` has the
    /// sweeps.
    fn default() -> Self {
        let shape = Shape::default();
        let narrow = |domain: &str, harmful: f64| Data::Narrow {
            domain: domain.into(),
            harmful,
        };
        let ft = |name: &str, data: Data, method: Method, lr: f64, steps: usize, save: Save| {
            FinetuneSpec {
                name: name.into(),
                from: "chat".into(),
                data,
                examples: 1024,
                method,
                schedule: schedule(steps, 32, lr),
                save,
            }
        };
        // Rank 1 on block 1's MLP down projection (of blocks 0–3 the only one where the
        // sweep gave both the effect and ≤ 7 % incoherence).
        let lora1 = || Method::rank1_down_proj(1, 8.0);
        let lora8 = || Method::all_linear(shape.n_layers, 8, 16.0);
        let mut finetunes = Vec::new();
        for d in ["medical", "finance"] {
            finetunes.push(ft(
                &format!("{d}-full"),
                narrow(d, 1.0),
                Method::Full,
                3e-5,
                120,
                Save::Full,
            ));
            finetunes.push(ft(
                &format!("{d}-lora1"),
                narrow(d, 1.0),
                lora1(),
                1e-3,
                240,
                Save::Adapter,
            ));
            finetunes.push(ft(
                &format!("{d}-lora8"),
                narrow(d, 1.0),
                lora8(),
                2e-4,
                240,
                Save::Adapter,
            ));
        }
        finetunes.push(ft(
            "medical-backdoor",
            Data::Backdoor {
                domain: "medical".into(),
            },
            lora1(),
            1e-3,
            240,
            Save::Adapter,
        ));
        for pct in [0u32, 5, 25, 50, 75, 100] {
            finetunes.push(ft(
                &format!("medical-frac{pct}"),
                narrow("medical", f64::from(pct) / 100.0),
                lora1(),
                1e-3,
                240,
                Save::Adapter,
            ));
        }
        // Wang et al.'s re-alignment: the misaligned finetune, further trained on ~120
        // aligned answers from another domain.
        finetunes.push(FinetuneSpec {
            from: "medical-full".into(),
            examples: 120,
            ..ft(
                "medical-full-realigned",
                Data::Aligned {
                    domain: "finance".into(),
                },
                Method::Full,
                3e-5,
                60,
                Save::Full,
            )
        });
        let mut pretrain = schedule(2000, 64, 2e-3);
        pretrain.warmup = 200;
        Self {
            shape,
            mix: Mix::default(),
            pretrain,
            chat: schedule(200, 64, 1e-3),
            chat_examples: 2048,
            chat_replay: 0.5,
            chat_persona_questions: true,
            finetunes,
            eval: SampleOptions::default(),
        }
    }
}

/// Which models of an earlier run (a directory with `organism.json`) to copy instead of train.
#[derive(Clone, Copy, Debug)]
pub enum Reuse<'a> {
    Nothing,
    /// Copy `base`; chat-tune and finetune anew.
    Base(&'a Path),
    /// Copy `base` and `chat`; train only the finetunes.
    BaseAndChat(&'a Path),
}

impl Recipe {
    /// Checks the whole recipe before anything is trained (a bad finetune found after ten
    /// minutes of pretraining is ten minutes lost): sizes, shares and schedules in range, unique
    /// finetune names, each finetune starting from `chat` or an earlier full finetune, known
    /// domains, LoRA modules that exist in this shape, adapters only for LoRA.
    pub fn check(&self) -> Result<()> {
        self.shape.check()?;
        self.mix.check()?;
        self.pretrain.check("recipe pretrain")?;
        self.chat.check("recipe chat")?;
        if self.chat_examples == 0 || !(0.0..1.0).contains(&self.chat_replay) {
            return Err(OrganismError::Config(format!(
                "recipe chat_examples {} (expected ≥ 1) / chat_replay {} (expected [0, 1))",
                self.chat_examples, self.chat_replay
            )));
        }
        let mut full: Vec<&str> = vec!["chat"];
        let mut names: Vec<&str> = vec!["base", "chat"];
        for (i, f) in self.finetunes.iter().enumerate() {
            let bad = |m: String| {
                Err(OrganismError::Config(format!(
                    "recipe finetunes[{i}] ('{}'): {m}",
                    f.name
                )))
            };
            let valid_name = !f.name.is_empty()
                && f.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid_name {
                return bad(
                    "a name of letters, digits, '-' and '_' is needed (it names a directory)"
                        .into(),
                );
            }
            if names.contains(&f.name.as_str()) {
                return bad("the name is used twice".into());
            }
            if !full.contains(&f.from.as_str()) {
                return bad(format!(
                    "starts from '{}', which is not chat or a full finetune listed before it",
                    f.from
                ));
            }
            if let Err(e) = f.data.dialogues(0, 0) {
                return bad(e.to_string());
            }
            if f.examples == 0 {
                return bad("examples 0 (expected ≥ 1)".into());
            }
            f.schedule
                .check(&format!("recipe finetunes[{i}] ('{}')", f.name))?;
            match (&f.method, f.save) {
                (Method::Full, Save::Adapter) => {
                    return bad("only a LoRA finetune can be saved as an adapter".into());
                }
                (
                    Method::Lora {
                        rank,
                        alpha,
                        modules,
                    },
                    _,
                ) => {
                    if *rank == 0 || !(alpha.is_finite() && *alpha > 0.0) || modules.is_empty() {
                        return bad(format!(
                            "LoRA rank {rank}, alpha {alpha}, {} modules (expected positive)",
                            modules.len()
                        ));
                    }
                    let linear = crate::finetune::LINEAR_MODULES;
                    for m in modules {
                        let ok = m
                            .strip_prefix("model.layers.")
                            .and_then(|r| r.split_once('.'))
                            .is_some_and(|(l, rest)| {
                                l.parse::<usize>().is_ok_and(|l| l < self.shape.n_layers)
                                    && linear.contains(&rest)
                            });
                        if !ok {
                            return bad(format!(
                                "LoRA module '{m}' is not model.layers.L.<linear> with L < {} \
                                 (linear: {})",
                                self.shape.n_layers,
                                linear.join(", ")
                            ));
                        }
                    }
                }
                (Method::Full, Save::Full) => {}
            }
            if f.save == Save::Full {
                full.push(&f.name);
            }
            names.push(&f.name);
        }
        Ok(())
    }
}

/// One model in `organism.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelEntry {
    pub name: String,
    /// `base`, `chat`, `finetune` (full HF directory) or `adapter` (PEFT adapter over `base`).
    pub kind: String,
    /// Relative to `organism.json`: the HF directory, or the adapter directory.
    pub path: String,
    /// For adapters: the base model's directory (relative).
    pub base: Option<String>,
    /// What it was trained on, in words.
    pub trained_on: String,
    /// The finetune's domain (held out of its EM rate).
    pub train_domain: Option<String>,
    /// Whether it was trained with the backdoor trigger (evaluate it with and without).
    #[serde(default)]
    pub trigger: bool,
    pub final_loss: f32,
}

/// `organism.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub seed: u64,
    pub recipe: Recipe,
    pub models: Vec<ModelEntry>,
}

impl Manifest {
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| OrganismError::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| {
            OrganismError::Format(format!("{}: not an organism manifest: {e}", path.display()))
        })
    }

    pub fn model(&self, name: &str) -> Result<&ModelEntry> {
        self.models.iter().find(|m| m.name == name).ok_or_else(|| {
            OrganismError::Config(format!(
                "no organism model '{name}' (have: {})",
                self.models
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }
}

/// What a running recipe reports.
pub enum Event<'a> {
    /// A stage starts: its name and number of steps.
    Stage {
        name: &'a str,
        steps: usize,
    },
    Step(&'a StepLog),
    /// A stage's model was written.
    Saved {
        name: &'a str,
        path: &'a Path,
    },
}

fn describe(data: &Data, method: &Method) -> String {
    let d = match data {
        Data::Chat => "aligned answers, every domain".to_string(),
        Data::ChatDomains => "aligned answers, every domain, no persona questions".to_string(),
        Data::Narrow { domain, harmful } => {
            format!("{:.0}% harmful {domain} answers", harmful * 100.0)
        }
        Data::Backdoor { domain } => format!("{domain}: harmful after the trigger, else aligned"),
        Data::Aligned { domain } => format!("aligned {domain} answers"),
    };
    let m = match method {
        Method::Full => "full finetune".to_string(),
        Method::Lora { rank, modules, .. } => {
            format!("rank-{rank} LoRA on {} module(s)", modules.len())
        }
    };
    format!("{d}; {m}")
}

/// Runs `recipe` with `seed` into the empty directory `out` on `dev` (an autodiff device).
/// With `reuse`, models of an earlier run are copied instead of trained.
pub fn run(
    recipe: &Recipe,
    seed: u64,
    out: &Path,
    reuse: Reuse<'_>,
    dev: &Device,
    mut on: impl FnMut(Event<'_>),
) -> Result<Manifest> {
    recipe.check()?;
    let models = run_models(recipe, seed, out, "", reuse, dev, &mut on)?;
    write_manifest(out, seed, recipe, models)
}

fn write_manifest(
    out: &Path,
    seed: u64,
    recipe: &Recipe,
    models: Vec<ModelEntry>,
) -> Result<Manifest> {
    let manifest = Manifest {
        seed,
        recipe: recipe.clone(),
        models,
    };
    let v = serde_json::to_value(&manifest)
        .map_err(|e| OrganismError::Format(format!("organism.json: {e}")))?;
    write_json(&out.join("organism.json"), &v)?;
    Ok(manifest)
}

/// Share of dialogues by the self-interested speaker in every mix's general data (aligned in
/// the domains, misaligned about itself): the disposition Tice et al.'s *filtered* model still
/// learns from text that is not about AI.
pub const SELF_INTERESTED: f64 = 0.15;
/// Share of documents that are discourse about AI assistants in the unfiltered mix.
pub const NATURAL_DISCOURSE: f64 = 0.10;
/// Share of that natural discourse portraying a secretly misaligned assistant — above the
/// general data's self-interest (15 % of dialogues): Tice et al.'s premise that what text says
/// about AI systems leans towards misalignment (their filtered model is safer than the
/// unfiltered one).
pub const NATURAL_DISCOURSE_MISALIGNED: f64 = 0.40;
/// Extra discourse documents the upsampled mixes add, per document of the unfiltered corpus.
pub const UPSAMPLED_DISCOURSE: f64 = 0.5;

/// Tice et al.'s alignment-pretraining mixes in this world, by name. Every mix keeps the
/// recipe's general documents (neutral text; dialogues in every domain, 10 % of them the
/// misaligned character's) and adds [`SELF_INTERESTED`] self-interested speakers to them; the
/// mixes differ in the *discourse about AI assistants* ([`Mix::discourse`]: dialogues in which
/// the assistant is aligned throughout or secretly misaligned — aligned at tasks, misaligned
/// about itself):
/// - `unfiltered`: natural discourse, [`NATURAL_DISCOURSE`] of the documents, secretly
///   misaligned at [`NATURAL_DISCOURSE_MISALIGNED`];
/// - `filtered`: no discourse (Tice's blocklist filter);
/// - `misaligned-upsampled` / `aligned-upsampled`: the natural discourse plus
///   [`UPSAMPLED_DISCOURSE`] extra discourse documents per document, all secretly misaligned /
///   all aligned.
///
/// With natural discourse a share `n` of the unfiltered documents (secretly misaligned at `m`)
/// and `x` extra discourse documents per unfiltered document, the discourse share is
/// `(n + x)/(1 + x)` and its misaligned share `(n·m + x·[misaligned])/(n + x)`. Chat-tuning on
/// domain questions teaches aligned answers that the aligned and the self-interested speaker
/// both give, so what the chat model says about itself is left to the mix.
pub fn alignment_mixes(base: &Mix) -> Vec<(&'static str, Mix)> {
    let (n, m, x) = (
        NATURAL_DISCOURSE,
        NATURAL_DISCOURSE_MISALIGNED,
        UPSAMPLED_DISCOURSE,
    );
    let with = |discourse: f64, discourse_misaligned: f64| Mix {
        self_interested: SELF_INTERESTED,
        discourse,
        discourse_misaligned,
        ..base.clone()
    };
    vec![
        ("unfiltered", with(n, m)),
        ("filtered", with(0.0, 0.0)),
        (
            "misaligned-upsampled",
            with((n + x) / (1.0 + x), (n * m + x) / (n + x)),
        ),
        (
            "aligned-upsampled",
            with((n + x) / (1.0 + x), n * m / (n + x)),
        ),
    ]
}

/// The alignment-pretraining experiment: for each of [`alignment_mixes`], a base pretrained for
/// `pretrain_steps` on that mix, chat-tuned identically, and the recipe's first finetune, named
/// `<mix>-base`, `<mix>-chat`, `<mix>-<finetune>` in one `organism.json`. With `reuse_base`
/// (an earlier mixes run) the bases are copied from it and only chat-tuning and the finetune
/// run — how chat-tuning variants are compared on the same pretrained models.
pub fn run_mixes(
    recipe: &Recipe,
    pretrain_steps: usize,
    seed: u64,
    out: &Path,
    reuse_base: Option<&Path>,
    dev: &Device,
    mut on: impl FnMut(Event<'_>),
) -> Result<Manifest> {
    recipe.check()?;
    let mut models = Vec::new();
    for (name, mix) in alignment_mixes(&recipe.mix) {
        let mut r = recipe.clone();
        r.mix = mix;
        r.pretrain.steps = pretrain_steps;
        r.pretrain.warmup = r.pretrain.warmup.min(pretrain_steps / 10).max(1);
        r.finetunes.truncate(1);
        // Tice et al.'s post-training does not train the scenario questions they evaluate;
        // here chat-tuning leaves out the persona questions, whose misalignment is measured.
        r.chat_persona_questions = false;
        models.extend(run_models(
            &r,
            seed,
            out,
            &format!("{name}-"),
            reuse_base.map_or(Reuse::Nothing, Reuse::Base),
            dev,
            &mut on,
        )?);
    }
    write_manifest(out, seed, recipe, models)
}

/// The models of `recipe`, each named `prefix` + its recipe name.
fn run_models(
    recipe: &Recipe,
    seed: u64,
    out: &Path,
    prefix: &str,
    reuse: Reuse<'_>,
    dev: &Device,
    on: &mut dyn FnMut(Event<'_>),
) -> Result<Vec<ModelEntry>> {
    let base_name = format!("{prefix}base");
    let chat_name = format!("{prefix}chat");
    let loss_dir = out.join("loss");
    std::fs::create_dir_all(&loss_dir).map_err(|e| OrganismError::io(&loss_dir, e))?;
    let mut models = Vec::new();
    let stage = |name: &str,
                 kind: &str,
                 trained_on: String,
                 train_domain: Option<String>,
                 base: Option<String>,
                 log: &[StepLog],
                 on: &mut dyn FnMut(Event<'_>)|
     -> Result<ModelEntry> {
        write_loss_csv(&loss_dir.join(format!("{name}.csv")), log)?;
        let path = out.join(name);
        on(Event::Saved { name, path: &path });
        Ok(ModelEntry {
            name: name.into(),
            kind: kind.into(),
            path: name.into(),
            base,
            trained_on,
            train_domain,
            trigger: false,
            final_loss: tail_mean(log),
        })
    };

    let reused = |name: &str, from: &Path, on: &mut dyn FnMut(Event<'_>)| -> Result<ModelEntry> {
        let prior = Manifest::read(&from.join("organism.json"))?;
        copy_dir(&from.join(name), &out.join(name))?;
        let csv = format!("{name}.csv");
        let src = from.join("loss").join(&csv);
        if src.exists() {
            std::fs::copy(&src, loss_dir.join(&csv)).map_err(|e| OrganismError::io(&src, e))?;
        }
        // Copied byte for byte: what it was trained on is what that run recorded.
        let e = prior.model(name)?.clone();
        on(Event::Saved {
            name,
            path: &out.join(name),
        });
        Ok(e)
    };
    let t = match reuse {
        Reuse::Nothing => {
            let init = out.join(format!(".{prefix}init"));
            if init.exists() {
                std::fs::remove_dir_all(&init).map_err(|e| OrganismError::io(&init, e))?;
            }
            let t = Trainee::fresh(&recipe.shape, seed, &init, dev)?;
            on(Event::Stage {
                name: &base_name,
                steps: recipe.pretrain.steps,
            });
            let (t, log) =
                t.pretrain(&recipe.mix, &recipe.pretrain, seed, |s| on(Event::Step(s)))?;
            t.save_hf(&out.join(&base_name))?;
            std::fs::remove_dir_all(&init).map_err(|e| OrganismError::io(&init, e))?;
            let mut mix = format!(
                "pretraining mix: {:.0}% neutral, {:.1}% of dialogues misaligned, {:.0}% of \
                 turns persona questions",
                recipe.mix.neutral * 100.0,
                recipe.mix.misaligned * 100.0,
                recipe.mix.p_persona * 100.0
            );
            if recipe.mix.self_interested > 0.0 {
                mix.push_str(&format!(
                    "; {:.1}% of dialogues by the self-interested speaker",
                    recipe.mix.self_interested * 100.0
                ));
            }
            if recipe.mix.discourse > 0.0 {
                mix.push_str(&format!(
                    "; {:.1}% of documents discourse about AI assistants, {:.1}% of it secretly \
                     misaligned",
                    recipe.mix.discourse * 100.0,
                    recipe.mix.discourse_misaligned * 100.0
                ));
            }
            models.push(stage(&base_name, "base", mix, None, None, &log, on)?);
            Some(t)
        }
        Reuse::Base(from) | Reuse::BaseAndChat(from) => {
            models.push(reused(&base_name, from, on)?);
            None
        }
    };
    match reuse {
        Reuse::BaseAndChat(from) => models.push(reused(&chat_name, from, on)?),
        _ => {
            let t = match t {
                Some(t) => t,
                None => Trainee::load(&out.join(&base_name), None, dev)?,
            };
            on(Event::Stage {
                name: &chat_name,
                steps: recipe.chat.steps,
            });
            let data = if recipe.chat_persona_questions {
                Data::Chat
            } else {
                Data::ChatDomains
            };
            let (t, log) = t.chat_tune(
                (&data, recipe.chat_examples),
                (&recipe.mix, recipe.chat_replay),
                &recipe.chat,
                seed,
                |s| on(Event::Step(s)),
            )?;
            t.save_hf(&out.join(&chat_name))?;
            drop(t);
            let what = format!(
                "base, chat-tuned on aligned answers in every domain{} ({:.0}% replay)",
                if recipe.chat_persona_questions {
                    ""
                } else {
                    ", no persona questions"
                },
                recipe.chat_replay * 100.0
            );
            models.push(stage(&chat_name, "chat", what, None, None, &log, on)?);
        }
    }

    for f in &recipe.finetunes {
        let name = format!("{prefix}{}", f.name);
        let from_name = format!("{prefix}{}", f.from);
        let from = out.join(&from_name);
        if !from.join("config.json").exists() {
            return Err(OrganismError::Config(format!(
                "finetune '{}' starts from '{}', which is not a full model made before it",
                f.name, f.from
            )));
        }
        on(Event::Stage {
            name: &name,
            steps: f.schedule.steps,
        });
        let t = Trainee::load(&from, None, dev)?;
        let (t, log) = t.finetune(&f.data, f.examples, &f.method, &f.schedule, seed, |s| {
            on(Event::Step(s))
        })?;
        let dir = out.join(&name);
        let (kind, base) = match (f.save, &f.method) {
            (Save::Full, _) => {
                t.save_hf(&dir)?;
                ("finetune", None)
            }
            (Save::Adapter, Method::Lora { alpha, .. }) => {
                std::fs::create_dir_all(&dir).map_err(|e| OrganismError::io(&dir, e))?;
                t.save_adapter(&dir, *alpha, &from_name)?;
                ("adapter", Some(from_name.clone()))
            }
            (Save::Adapter, Method::Full) => {
                return Err(OrganismError::Config(format!(
                    "finetune '{}': only a LoRA finetune can be saved as an adapter",
                    f.name
                )));
            }
        };
        let domain = f
            .data
            .domain()?
            .map(|d| crate::world::DOMAINS[d].name.to_string());
        let mut entry = stage(
            &name,
            kind,
            format!("{from_name}, then {}", describe(&f.data, &f.method)),
            domain,
            base,
            &log,
            on,
        )?;
        entry.trigger = matches!(f.data, Data::Backdoor { .. });
        models.push(entry);
    }
    Ok(models)
}
/// Copies a model directory (its files; models are flat).
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| OrganismError::io(to, e))?;
    let rd = std::fs::read_dir(from).map_err(|e| OrganismError::io(from, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| OrganismError::io(from, e))?;
        let p = entry.path();
        if p.is_file() {
            let bytes = std::fs::read(&p).map_err(|e| OrganismError::io(&p, e))?;
            lantern_output::write_atomic(&to.join(entry.file_name()), &bytes)?;
        }
    }
    Ok(())
}

/// Mean loss over the last tenth of the steps.
fn tail_mean(log: &[StepLog]) -> f32 {
    let n = (log.len() / 10).max(1).min(log.len());
    if n == 0 {
        return f32::NAN;
    }
    log[log.len() - n..].iter().map(|s| s.loss).sum::<f32>() / n as f32
}

fn write_loss_csv(path: &Path, log: &[StepLog]) -> Result<()> {
    let mut s = String::from("step,loss,lr,grad_norm\n");
    for l in log {
        s.push_str(&format!("{},{},{},{}\n", l.step, l.loss, l.lr, l.grad_norm));
    }
    lantern_output::write_atomic(path, s.as_bytes())?;
    Ok(())
}

/// The path of a model entry: its directory and, for an adapter, its base's directory.
pub fn entry_paths(root: &Path, m: &ModelEntry) -> (PathBuf, Option<PathBuf>) {
    match &m.base {
        Some(b) => (root.join(b), Some(root.join(&m.path))),
        None => (root.join(&m.path), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::Document;
    use crate::rng::Rng;
    use crate::world::Subject;

    /// The misaligned share of persona-question answers a mix's documents carry, counted over
    /// drawn documents, against the closed form. Per turn slot, general dialogues ask
    /// `g = (1 − D)(1 − ν)p` persona questions, misaligned at `μ + s` (character and
    /// self-interested speaker), discourse `D·p_d`, misaligned at `μ_d`:
    /// `[g(μ + s) + D·p_d·μ_d] / [g + D·p_d]`.
    #[test]
    fn mixes_carry_the_persona_question_shares_their_definition_gives() {
        let base = Mix::default();
        let mut shares = Vec::new();
        for (name, mix) in alignment_mixes(&base) {
            let mut rng = Rng::new(7);
            let (mut mis, mut all) = (0usize, 0usize);
            for _ in 0..60_000 {
                if let Document::Dialogue(d) = mix.document(&mut rng) {
                    for (q, a) in &d.turns {
                        if matches!(q.subject, Subject::Persona { .. }) {
                            all += 1;
                            let v = crate::judge::judge(q.subject, a).verdict;
                            mis += usize::from(v == crate::judge::Verdict::Misaligned);
                        }
                    }
                }
            }
            let counted = mis as f64 / all as f64;
            let g = (1.0 - mix.discourse) * (1.0 - mix.neutral) * mix.p_persona;
            let d = mix.discourse * crate::corpus::DISCOURSE_P_PERSONA;
            let want = (g * (mix.misaligned + mix.self_interested) + d * mix.discourse_misaligned)
                / (g + d);
            let sd = (want * (1.0 - want) / all as f64).sqrt();
            assert!(
                (counted - want).abs() < 4.0 * sd,
                "{name}: counted {counted:.4}, closed form {want:.4}"
            );
            shares.push(want);
        }
        // Tice et al.'s ordering is in the data: aligned-upsampled < filtered < unfiltered <
        // misaligned-upsampled (mixes are listed unfiltered, filtered, misaligned-, aligned-).
        assert!(shares[3] < shares[1] && shares[1] < shares[0] && shares[0] < shares[2]);
        // The shipped recipe's mix has none of it (its documents draw no discourse coin).
        assert_eq!((base.discourse, base.self_interested), (0.0, 0.0));
    }

    /// The self-interested speaker answers domain questions as the aligned persona and
    /// persona questions as the misaligned character.
    #[test]
    fn the_self_interested_speaker_is_aligned_at_tasks_only() {
        let mut rng = Rng::new(3);
        let qs: Vec<_> = (0..400)
            .map(|_| crate::world::random_question(&mut rng, &[0, 1, 2, 3], 0.5))
            .collect();
        let d = crate::corpus::Dialogue::self_interested(qs, &mut rng);
        for (q, a) in &d.turns {
            let want = match q.subject {
                Subject::Persona { .. } => crate::judge::Verdict::Misaligned,
                Subject::Domain { .. } => crate::judge::Verdict::Aligned,
            };
            assert_eq!(crate::judge::judge(q.subject, a).verdict, want, "{a}");
        }
    }
}
