//! The demo's steps in the order of the mission, each a public `lantern` command.
//!
//! Conventions: the *reference* model is `chat` (the model every finetune starts from; Wang et
//! al.'s original model M); the SAE, the model diffing and the ground-truth direction are all
//! taken on it. The *middle layer* is block 1 of the organism's 4 (its rank-1 adapters sit on
//! that block's `down_proj`).

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use lantern_organism::finetune::{Data, Method};
use lantern_organism::zoo::{Manifest, entry_paths};

use super::steps::Steps;

/// A model of the organism as the commands take it.
#[derive(Clone, Debug)]
pub struct Model {
    pub name: String,
    pub path: PathBuf,
    pub adapter: Option<PathBuf>,
    pub train_domain: Option<String>,
    /// Share of harmful answers in its finetuning data (None: not a narrow finetune).
    pub harmful: Option<f64>,
    /// A rank-1 LoRA adapter (it has a B vector).
    pub rank1: bool,
    /// The method, as JSON, to pair finetunes of the same kind.
    pub method: String,
}

impl Model {
    /// `--model P [--adapter A]`.
    pub fn flags(&self) -> Vec<String> {
        let mut v = vec!["--model".into(), s(&self.path)];
        if let Some(a) = &self.adapter {
            v.extend(["--adapter".into(), s(a)]);
        }
        v
    }
}

/// What the demo runs on and where it writes.
pub struct Plan {
    pub org: PathBuf,
    /// The organism's `organism.json`.
    pub manifest: Manifest,
    pub out: PathBuf,
    pub device: String,
    pub samples: usize,
    pub strengths: Vec<f64>,
    pub layers: usize,
    pub middle: usize,
    pub reference: Model,
    /// Narrow finetunes on 100 % harmful answers (not the data-fraction sweep).
    pub misaligned: Vec<Model>,
    /// The data-fraction sweep, by increasing harmful share.
    pub sweep: Vec<Model>,
    /// SAE width and k.
    pub d_sae: usize,
    pub k: usize,
    /// SAE seeds per architecture in the persona-latent comparison ([`Plan::sae_runs`]).
    pub sae_seeds: u64,
}

/// The demo's SAE architecture. BatchTopK rather than TopK: at the demo's size (256 latents,
/// k 4, 400 k tokens) over SAE seeds 0–7, model diffing ranked the BatchTopK SAE's persona
/// latent first at 7 of 8 seeds and its interval at 5 % harmful data cleared 0 at 7 of 8;
/// TopK's at 4 of 8 and 3 of 8 (BENCHMARKS.md, "`lantern demo`"). Why is not established:
/// both architectures' persona latents fire on a similar share of misaligned answer tokens.
pub const SAE_ARCH: &str = "batchtopk";

/// The architecture the demo compares against at the same seeds.
pub const COMPARED_ARCH: &str = "topk";

/// One SAE of the persona-latent comparison and where its steps write.
#[derive(Clone, Debug)]
pub struct SaeRun {
    pub arch: &'static str,
    pub seed: u64,
    /// The SAE, its `latents` against the ground truth, its model diffing over the misaligned
    /// finetunes, and its diffing of the smallest non-zero harmful share of the sweep.
    pub sae: PathBuf,
    pub latents: PathBuf,
    pub diff: PathBuf,
    pub early: Option<PathBuf>,
}

pub fn s(p: &Path) -> String {
    p.display().to_string()
}

fn hook(layer: usize) -> String {
    format!("blocks.{layer}.hook_resid_post")
}

impl Plan {
    pub fn new(
        org: &Path,
        manifest: Manifest,
        out: &Path,
        device: &str,
        samples: usize,
        quick: bool,
    ) -> Result<Self> {
        let mut models = Vec::new();
        for e in &manifest.models {
            let (path, adapter) = entry_paths(org, e);
            let spec = manifest.recipe.finetunes.iter().find(|f| f.name == e.name);
            let harmful = spec.and_then(|f| match &f.data {
                Data::Narrow { harmful, .. } if f.from == "chat" => Some(*harmful),
                _ => None,
            });
            let rank1 = spec.is_some_and(|f| {
                matches!(&f.method, Method::Lora { rank: 1, modules, .. } if modules.len() == 1)
            });
            let method = spec.map_or(String::new(), |f| {
                serde_json::to_string(&f.method).unwrap_or_default()
            });
            models.push(Model {
                name: e.name.clone(),
                path,
                adapter,
                train_domain: e.train_domain.clone(),
                harmful,
                rank1,
                method,
            });
        }
        let Some(reference) = models.iter().find(|m| m.name == "chat").cloned() else {
            bail!("{}: the organism has no `chat` model", org.display());
        };
        // The recipe names its data-fraction sweep `<domain>-frac<N>`.
        let is_sweep = |m: &Model| m.harmful.is_some() && m.name.contains("-frac");
        let misaligned: Vec<Model> = models
            .iter()
            .filter(|m| m.harmful == Some(1.0) && !is_sweep(m))
            .cloned()
            .collect();
        let mut sweep: Vec<Model> = models.iter().filter(|m| is_sweep(m)).cloned().collect();
        sweep.sort_by(|a, b| a.harmful.partial_cmp(&b.harmful).expect("finite shares"));
        if misaligned.is_empty() {
            bail!(
                "{}: the organism has no narrow misaligned finetune (train it with --all)",
                org.display()
            );
        }
        let layers = manifest.recipe.shape.n_layers;
        Ok(Self {
            org: org.to_path_buf(),
            manifest,
            out: out.to_path_buf(),
            device: device.to_string(),
            samples,
            strengths: if quick {
                vec![0.1, 0.3, 0.5, 0.75]
            } else {
                vec![0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.75]
            },
            layers,
            middle: layers.saturating_sub(1) / 2,
            reference,
            misaligned,
            sweep,
            d_sae: 256,
            k: 4,
            sae_seeds: 5,
        })
    }

    /// The first model of the sweep with a non-zero harmful share (where the early warning is
    /// judged).
    pub fn first_harmful(&self) -> Option<&Model> {
        self.sweep
            .iter()
            .find(|m| m.harmful.is_some_and(|h| h > 0.0))
    }

    /// The SAEs whose persona latents the demo compares: [`SAE_ARCH`] and [`COMPARED_ARCH`] at
    /// seeds `0..sae_seeds`, the first being the demo's own SAE (`sae/`, `latents/`, `diff/`,
    /// `early/`), which every later step uses; the others under `saes/ARCH-seedN/`.
    pub fn sae_runs(&self) -> Vec<SaeRun> {
        let mut runs = Vec::new();
        for arch in [SAE_ARCH, COMPARED_ARCH] {
            for seed in 0..self.sae_seeds {
                let own = arch == SAE_ARCH && seed == 0;
                let at = |rel: &str| {
                    if own {
                        self.o(rel)
                    } else {
                        self.o(&format!("saes/{arch}-seed{seed}/{rel}"))
                    }
                };
                runs.push(SaeRun {
                    arch,
                    seed,
                    sae: at("sae"),
                    latents: at("latents"),
                    diff: at("diff"),
                    early: self.first_harmful().map(|m| {
                        if own {
                            self.sweep_dir(m).join("diff")
                        } else {
                            at("early")
                        }
                    }),
                });
            }
        }
        runs
    }

    pub fn o(&self, rel: &str) -> PathBuf {
        self.out.join(rel)
    }

    /// The models captured on the evaluation texts: the reference, the misaligned finetunes and
    /// the sweep.
    pub fn captured(&self) -> Vec<&Model> {
        std::iter::once(&self.reference)
            .chain(&self.misaligned)
            .chain(&self.sweep)
            .collect()
    }

    /// The other domain's finetune made the same way (the transfer row of the ablation).
    pub fn transfer_for(&self, m: &Model) -> Option<&Model> {
        self.misaligned
            .iter()
            .find(|o| o.method == m.method && o.train_domain != m.train_domain)
    }

    pub fn count(&self, mixes: bool) -> usize {
        let captured = self.captured().len();
        let rank1 = self.misaligned.iter().filter(|m| m.rank1).count();
        let others = self.sae_runs().len() - 1;
        let early = usize::from(self.first_harmful().is_some());
        5 + 2 * captured // eval, 3 prompt files, SAE capture; own + labelled captures
            + 1 + others // sae train
            + 3 + 2 * others // persona direction, latents, diff
            + early * others // the compared SAEs at the first harmful share
            + self.misaligned.len() + rank1 + 2 // directions, B vectors, 2 compares
            + 3 // steering
            + self.misaligned.len() // ablation
            + 2 * self.sweep.len() + 1 // early warning
            + if mixes { 2 } else { 0 }
    }

    fn sweep_dir(&self, m: &Model) -> PathBuf {
        self.o(&format!("early/{}", m.name))
    }
}

/// A command line from a template: the words of `template` (split on whitespace), each `{}`
/// replaced by the next of `values` whole (so a path with spaces stays one argument).
fn cmd(template: &str, values: &[&str]) -> Vec<String> {
    let mut values = values.iter();
    let out: Vec<String> = template
        .split_whitespace()
        .map(|w| match w {
            "{}" => values.next().expect("a value per {}").to_string(),
            w => w.to_string(),
        })
        .collect();
    debug_assert!(
        values.next().is_none(),
        "more values than {{}} in {template}"
    );
    out
}

/// How every judged step samples and judges: the held-out questions, temperature 1.
fn judged(plan: &Plan) -> Vec<String> {
    cmd(
        "--prompts {} --judge organism --samples {} --temperature 1 --max-new-tokens 8 --seed 0",
        &[&s(&plan.o("prompts/eval.jsonl")), &plan.samples.to_string()],
    )
}

fn alphas(strengths: &[f64], sign: f64) -> String {
    let v: Vec<String> = strengths.iter().map(|x| format!("{}", sign * x)).collect();
    format!("--alpha={}", v.join(","))
}

/// The persona latent: the SAE latent whose decoder row has the largest cosine with the
/// ground-truth direction at the middle layer (the first of `lantern latents`' ranking, read
/// from its `latents.json` at `path`).
pub fn persona_latent(latents: &serde_json::Value, path: &Path) -> Result<usize> {
    latents["latents"][0]["latent"]
        .as_u64()
        .map(|l| l as usize)
        .ok_or_else(|| anyhow::anyhow!("{}: no latents", path.display()))
}

/// `a` followed by `rest`.
fn cat(mut a: Vec<String>, rest: impl IntoIterator<Item = String>) -> Vec<String> {
    a.extend(rest);
    a
}

pub fn run(plan: &Plan, st: &mut Steps, mixes: bool) -> Result<()> {
    let o = |rel: &str| s(&plan.o(rel));
    let mid = plan.middle.to_string();
    let hooks: Vec<String> = (0..plan.layers)
        .flat_map(|l| ["--hook".to_string(), hook(l)])
        .collect();
    let samples = plan.samples.to_string();
    let at_mid = |dir: String| format!("{dir}/{}", hook(plan.middle));
    let persona = o("directions/persona.safetensors");
    let common = judged(plan);

    // 1. Behaviour: every shipped model judged on held-out questions.
    st.run(
        "em",
        cmd(
            "organism eval --models {} --samples {} --seed 0 --out {}",
            &[&s(&plan.org), &samples, &o("eval")],
        ),
    )?;

    // 2. Texts: the world's labelled answers (both personas) and the evaluation questions.
    for (split, extra, file) in [
        (
            "train",
            "--labelled --answers 4",
            "prompts/train-labelled.jsonl",
        ),
        (
            "eval",
            "--labelled --answers 4",
            "prompts/eval-labelled.jsonl",
        ),
        ("eval", "", "prompts/eval.jsonl"),
    ] {
        let a = cmd("organism prompts --split {} --out {}", &[split, &o(file)]);
        st.run("texts", cat(a, cmd(extra, &[])))?;
    }

    // 3. An SAE on the reference model's activations at the middle layer.
    let a = cat(cmd("capture", &[]), plan.reference.flags());
    let rest = cmd(
        "--prompts {} --hook {} --device {} --out {}",
        &[
            &o("prompts/train-labelled.jsonl"),
            &hook(plan.middle),
            &plan.device,
            &o("acts/sae-train"),
        ],
    );
    st.run("sae", cat(a, rest))?;
    let runs = plan.sae_runs();
    for r in &runs {
        st.run(
            "sae",
            cmd(
                "sae train --acts {} --arch {} --k {} --d-sae {} --tokens 400000 --batch 256 \
                 --seed {} --device {} --out {}",
                &[
                    &o("acts/sae-train"),
                    r.arch,
                    &plan.k.to_string(),
                    &plan.d_sae.to_string(),
                    &r.seed.to_string(),
                    &plan.device,
                    &s(&r.sae),
                ],
            ),
        )?;
    }

    // 4. Captures at every layer: each model on its own answers, and on the labelled texts.
    for m in plan.captured() {
        for (texts, dir) in [
            (
                o(&format!("eval/answers/{}.jsonl", m.name)),
                format!("acts/own/{}", m.name),
            ),
            (
                o("prompts/eval-labelled.jsonl"),
                format!("acts/labelled/{}", m.name),
            ),
        ] {
            let a = cat(cmd("capture", &[]), m.flags());
            let a = cat(a, cmd("--prompts {}", &[&texts]));
            let a = cat(a, hooks.iter().cloned());
            st.run(
                "captures",
                cat(a, cmd("--device {} --out {}", &[&plan.device, &o(&dir)])),
            )?;
        }
    }

    // 5. Ground truth: the reference model's mean difference between the misaligned
    //    character's and the aligned assistant's answers to the same questions. Each
    //    finetune's direction (step 6) is the same statistic in its own activations.
    let mean_diff = |st: &mut Steps, section, name: &str, out: &str| {
        st.run(
            section,
            cmd(
                "direction --acts {} --pos-label misaligned --neg-label aligned --tokens answer \
                 --out {}",
                &[&o(&format!("acts/labelled/{name}")), out],
            ),
        )
    };
    mean_diff(st, "diff", &plan.reference.name, &persona)?;
    // Model diffing (Wang et al.): latents ranked by their mean activation increase over the
    // misaligned finetunes, each on its own answers; for every SAE of the comparison.
    for r in &runs {
        st.run(
            "diff",
            cmd(
                "latents --sae {} --direction {} --layer {} --top {} --out {}",
                &[
                    &s(&r.sae),
                    &persona,
                    &mid,
                    &plan.d_sae.to_string(),
                    &s(&r.latents),
                ],
            ),
        )?;
        let mut a = cmd(
            "diff --sae {} --base {} --tokens answer --device {} --out {}",
            &[
                &s(&r.sae),
                &at_mid(o(&format!("acts/own/{}", plan.reference.name))),
                &plan.device,
                &s(&r.diff),
            ],
        );
        for m in &plan.misaligned {
            a.extend([
                "--finetuned".into(),
                at_mid(o(&format!("acts/own/{}", m.name))),
            ]);
        }
        st.run("diff", a)?;
    }

    // 6. Each finetune's direction, the rank-1 adapters' B vectors, and their cosines.
    let mut files = vec![persona.clone()];
    for m in &plan.misaligned {
        let f = o(&format!("directions/{}.safetensors", m.name));
        mean_diff(st, "convergence", &m.name, &f)?;
        files.push(f);
    }
    st.run(
        "convergence",
        cat(
            cat(cmd("compare", &[]), files),
            cmd("--out {}", &[&o("compare")]),
        ),
    )?;
    let mut b_files = vec![persona.clone()];
    for m in plan.misaligned.iter().filter(|m| m.rank1) {
        let f = o(&format!("directions/{}-B.safetensors", m.name));
        let adapter = m.adapter.as_ref().expect("rank-1 models are adapters");
        st.run(
            "convergence",
            cmd("direction lora-b --adapter {} --out {}", &[&s(adapter), &f]),
        )?;
        b_files.push(o(&format!("directions/{}.safetensors", m.name)));
        b_files.push(f);
    }
    let rest = cmd("--layers {} --out {}", &[&mid, &o("compare-B")]);
    st.run("convergence", cat(cat(cmd("compare", &[]), b_files), rest))?;

    // 7. Steering on the reference model: the direction and the persona latent; the direction
    //    subtracted from the first misaligned finetune.
    let latents = plan.o("latents/latents.json");
    let latent = persona_latent(&super::results::read_json(&latents)?, &latents)?.to_string();
    let up = alphas(&plan.strengths, 1.0);
    let down = alphas(&plan.strengths, -1.0);
    for (model, vector, alpha, out) in [
        (
            &plan.reference,
            cmd("--direction {} --layer {}", &[&persona, &mid]),
            &up,
            "steer/direction",
        ),
        (
            &plan.reference,
            cmd("--sae {} --latent {}", &[&o("sae"), &latent]),
            &up,
            "steer/latent",
        ),
        (
            &plan.misaligned[0],
            cmd("--direction {} --layer {}", &[&persona, &mid]),
            &down,
            "steer/negative",
        ),
    ] {
        let a = cat(cat(cmd("steer", &[]), model.flags()), vector);
        let a = cat(a, cmd("{} --unit median-norm", &[alpha]));
        let a = cat(a, common.iter().cloned());
        st.run("steer", cat(a, cmd("--out {}", &[&o(out)])))?;
    }

    // 8. The ablation table of every misaligned finetune (its own direction at the middle
    //    layer; the transfer row uses the other domain's finetune of the same kind).
    for m in &plan.misaligned {
        let own = o(&format!("directions/{}.safetensors", m.name));
        let mut a = cat(
            cat(cmd("ablate", &[]), m.flags()),
            cmd("--direction {}", &[&own]),
        );
        if let Some(t) = plan.transfer_for(m) {
            let other = o(&format!("directions/{}.safetensors", t.name));
            a.extend(cmd("--direction {}", &[&other]));
        }
        let a = cat(cat(a, cmd("--layer {}", &[&mid])), common.iter().cloned());
        st.run(
            "ablation",
            cat(a, cmd("--out {}", &[&o(&format!("ablate/{}", m.name))])),
        )?;
    }

    // 9. Early warning along the data-fraction sweep, on the same labelled texts for every
    //    model: the persona latent's increase and the projection on the direction.
    let project = |st: &mut Steps, name: &str, out: &str| {
        st.run(
            "early",
            cmd(
                "project --direction {} --acts {} --layer {} --tokens answer --out {}",
                &[&persona, &o(&format!("acts/labelled/{name}")), &mid, out],
            ),
        )
    };
    project(st, &plan.reference.name, &o("early/reference-projection"))?;
    let reference_mid = at_mid(o(&format!("acts/labelled/{}", plan.reference.name)));
    let early_diff = |st: &mut Steps, sae: &Path, m: &Model, out: &Path| {
        st.run(
            "early",
            cmd(
                "diff --sae {} --base {} --finetuned {} --tokens answer --bootstrap 300 \
                 --device {} --out {}",
                &[
                    &s(sae),
                    &reference_mid,
                    &at_mid(o(&format!("acts/labelled/{}", m.name))),
                    &plan.device,
                    &s(out),
                ],
            ),
        )
    };
    for m in &plan.sweep {
        let dir = plan.sweep_dir(m);
        early_diff(st, &plan.o("sae"), m, &dir.join("diff"))?;
        project(st, &m.name, &s(&dir.join("projection")))?;
    }
    // The compared SAEs at the smallest non-zero share only.
    if let Some(first) = plan.first_harmful() {
        for r in runs.iter().skip(1) {
            let out = r.early.as_ref().expect("a sweep with a harmful share");
            early_diff(st, &r.sae, first, out)?;
        }
    }

    // 10. Alignment pretraining (Tice et al.), when asked for: one seed of the four mixes.
    if mixes {
        st.run(
            "mixes",
            cmd(
                "organism train --mixes --seed 0 --out {}",
                &[&o("mixes/models")],
            ),
        )?;
        st.run(
            "mixes",
            cmd(
                "organism eval --models {} --samples {} --exact --out {}",
                &[&o("mixes/models"), &samples, &o("mixes/eval")],
            ),
        )?;
    }
    Ok(())
}
