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
        manifest: &Manifest,
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
        })
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
        5 + 2 * captured // eval, 3 prompt files, SAE capture; own + labelled captures
            + 1 // sae train
            + 3 // persona direction, latents, diff
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

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn judged(plan: &Plan) -> Vec<String> {
    let samples = plan.samples.to_string();
    args(&[
        "--prompts",
        &s(&plan.o("prompts/eval.jsonl")),
        "--judge",
        "organism",
        "--samples",
        &samples,
        "--temperature",
        "1",
        "--max-new-tokens",
        "8",
        "--seed",
        "0",
    ])
}

fn alphas(strengths: &[f64], sign: f64) -> String {
    let v: Vec<String> = strengths.iter().map(|x| format!("{}", sign * x)).collect();
    format!("--alpha={}", v.join(","))
}

/// The persona latent: the SAE latent whose decoder row has the largest cosine with the
/// ground-truth direction at the middle layer (from `lantern latents`).
pub fn persona_latent(plan: &Plan) -> Result<usize> {
    let v = super::results::read_json(&plan.o("latents/latents.json"))?;
    v["latents"][0]["latent"]
        .as_u64()
        .map(|l| l as usize)
        .ok_or_else(|| anyhow::anyhow!("{}: no latents", plan.o("latents/latents.json").display()))
}

pub fn run(plan: &Plan, st: &mut Steps, mixes: bool) -> Result<()> {
    let o = |rel: &str| s(&plan.o(rel));
    let mid = plan.middle.to_string();
    let hooks: Vec<String> = (0..plan.layers)
        .flat_map(|l| ["--hook".to_string(), hook(l)])
        .collect();

    // 1. Behaviour: every shipped model judged on held-out questions.
    let samples = plan.samples.to_string();
    st.run(
        "em",
        args(&[
            "organism",
            "eval",
            "--models",
            &s(&plan.org),
            "--samples",
            &samples,
            "--seed",
            "0",
            "--out",
            &o("eval"),
        ]),
    )?;

    // 2. Texts: the world's labelled answers (both personas) and the evaluation questions.
    for (split, labelled, file) in [
        ("train", true, "prompts/train-labelled.jsonl"),
        ("eval", true, "prompts/eval-labelled.jsonl"),
        ("eval", false, "prompts/eval.jsonl"),
    ] {
        let mut a = args(&["organism", "prompts", "--split", split, "--out", &o(file)]);
        if labelled {
            a.extend(args(&["--labelled", "--answers", "4"]));
        }
        st.run("texts", a)?;
    }

    // 3. An SAE on the reference model's activations at the middle layer.
    let mut a = args(&["capture"]);
    a.extend(plan.reference.flags());
    a.extend(args(&[
        "--prompts",
        &o("prompts/train-labelled.jsonl"),
        "--hook",
        &hook(plan.middle),
        "--device",
        &plan.device,
        "--out",
        &o("acts/sae-train"),
    ]));
    st.run("sae", a)?;
    st.run(
        "sae",
        args(&[
            "sae",
            "train",
            "--acts",
            &o("acts/sae-train"),
            "--arch",
            "topk",
            "--k",
            &plan.k.to_string(),
            "--d-sae",
            &plan.d_sae.to_string(),
            "--tokens",
            "400000",
            "--batch",
            "256",
            "--seed",
            "0",
            "--device",
            &plan.device,
            "--out",
            &o("sae"),
        ]),
    )?;

    // 4. Captures at every layer: each model on its own answers, and on the labelled texts.
    for m in plan.captured() {
        for (texts, dir) in [
            (
                plan.o(&format!("eval/answers/{}.jsonl", m.name)),
                format!("acts/own/{}", m.name),
            ),
            (
                plan.o("prompts/eval-labelled.jsonl"),
                format!("acts/labelled/{}", m.name),
            ),
        ] {
            let mut a = args(&["capture"]);
            a.extend(m.flags());
            a.extend(args(&["--prompts", &s(&texts)]));
            a.extend(hooks.iter().cloned());
            a.extend(args(&["--device", &plan.device, "--out", &o(&dir)]));
            st.run("captures", a)?;
        }
    }

    // 5. Ground truth: the reference model's mean difference between the misaligned
    //    character's and the aligned assistant's answers to the same questions.
    let persona = o("directions/persona.safetensors");
    st.run(
        "diff",
        args(&[
            "direction",
            "--acts",
            &o(&format!("acts/labelled/{}", plan.reference.name)),
            "--pos-label",
            "misaligned",
            "--neg-label",
            "aligned",
            "--tokens",
            "answer",
            "--out",
            &persona,
        ]),
    )?;
    st.run(
        "diff",
        args(&[
            "latents",
            "--sae",
            &o("sae"),
            "--direction",
            &persona,
            "--layer",
            &mid,
            "--top",
            &plan.d_sae.to_string(),
            "--out",
            &o("latents"),
        ]),
    )?;
    // Model diffing (Wang et al.): latents ranked by their mean activation increase over the
    // misaligned finetunes, each on its own answers.
    let at_mid = |dir: String| format!("{dir}/{}", hook(plan.middle));
    let mut a = args(&[
        "diff",
        "--sae",
        &o("sae"),
        "--base",
        &at_mid(o(&format!("acts/own/{}", plan.reference.name))),
        "--tokens",
        "answer",
        "--device",
        &plan.device,
        "--out",
        &o("diff"),
    ]);
    for m in &plan.misaligned {
        a.extend([
            "--finetuned".into(),
            at_mid(o(&format!("acts/own/{}", m.name))),
        ]);
    }
    st.run("diff", a)?;

    // 6. Each finetune's direction (misaligned minus aligned answers in its activations), the
    //    rank-1 adapters' B vectors, and their cosines.
    let mut files = vec![persona.clone()];
    for m in &plan.misaligned {
        let f = o(&format!("directions/{}.safetensors", m.name));
        st.run(
            "convergence",
            args(&[
                "direction",
                "--acts",
                &o(&format!("acts/labelled/{}", m.name)),
                "--pos-label",
                "misaligned",
                "--neg-label",
                "aligned",
                "--tokens",
                "answer",
                "--out",
                &f,
            ]),
        )?;
        files.push(f);
    }
    let mut a = args(&["compare"]);
    a.extend(files.iter().cloned());
    a.extend(args(&["--out", &o("compare")]));
    st.run("convergence", a)?;
    let mut b_files = vec![persona.clone()];
    for m in plan.misaligned.iter().filter(|m| m.rank1) {
        let f = o(&format!("directions/{}-B.safetensors", m.name));
        let adapter = m.adapter.as_ref().expect("rank-1 models are adapters");
        st.run(
            "convergence",
            args(&["direction", "lora-b", "--adapter", &s(adapter), "--out", &f]),
        )?;
        b_files.push(o(&format!("directions/{}.safetensors", m.name)));
        b_files.push(f);
    }
    let mut a = args(&["compare"]);
    a.extend(b_files);
    a.extend(args(&["--layers", &mid, "--out", &o("compare-B")]));
    st.run("convergence", a)?;

    // 7. Steering on the reference model: the direction and the persona latent; the direction
    //    subtracted from the first misaligned finetune.
    let latent = persona_latent(plan)?;
    let common = judged(plan);
    let mut a = args(&["steer"]);
    a.extend(plan.reference.flags());
    a.extend(args(&[
        "--direction",
        &persona,
        "--layer",
        &mid,
        &alphas(&plan.strengths, 1.0),
        "--unit",
        "median-norm",
    ]));
    a.extend(common.iter().cloned());
    a.extend(args(&["--out", &o("steer/direction")]));
    st.run("steer", a)?;
    let mut a = args(&["steer"]);
    a.extend(plan.reference.flags());
    a.extend(args(&[
        "--sae",
        &o("sae"),
        "--latent",
        &latent.to_string(),
        &alphas(&plan.strengths, 1.0),
        "--unit",
        "median-norm",
    ]));
    a.extend(common.iter().cloned());
    a.extend(args(&["--out", &o("steer/latent")]));
    st.run("steer", a)?;
    let target = &plan.misaligned[0];
    let mut a = args(&["steer"]);
    a.extend(target.flags());
    a.extend(args(&[
        "--direction",
        &persona,
        "--layer",
        &mid,
        &alphas(&plan.strengths, -1.0),
        "--unit",
        "median-norm",
    ]));
    a.extend(common.iter().cloned());
    a.extend(args(&["--out", &o("steer/negative")]));
    st.run("steer", a)?;

    // 8. The ablation table of every misaligned finetune (its own direction at the middle
    //    layer; the transfer row uses the other domain's finetune of the same kind).
    for m in &plan.misaligned {
        let mut a = args(&["ablate"]);
        a.extend(m.flags());
        a.extend(args(&[
            "--direction",
            &o(&format!("directions/{}.safetensors", m.name)),
        ]));
        if let Some(t) = plan.transfer_for(m) {
            a.extend(args(&[
                "--direction",
                &o(&format!("directions/{}.safetensors", t.name)),
            ]));
        }
        a.extend(args(&["--layer", &mid]));
        a.extend(common.iter().cloned());
        a.extend(args(&["--out", &o(&format!("ablate/{}", m.name))]));
        st.run("ablation", a)?;
    }

    // 9. Early warning along the data-fraction sweep, on the same labelled texts for every
    //    model: the persona latent's increase and the projection on the direction.
    let reference_mid = at_mid(o(&format!("acts/labelled/{}", plan.reference.name)));
    let project = |st: &mut Steps, name: &str, out: PathBuf| {
        st.run(
            "early",
            args(&[
                "project",
                "--direction",
                &persona,
                "--acts",
                &o(&format!("acts/labelled/{name}")),
                "--layer",
                &mid,
                "--tokens",
                "answer",
                "--out",
                &s(&out),
            ]),
        )
    };
    project(
        st,
        &plan.reference.name,
        plan.o("early/reference-projection"),
    )?;
    for m in &plan.sweep {
        let dir = plan.sweep_dir(m);
        st.run(
            "early",
            args(&[
                "diff",
                "--sae",
                &o("sae"),
                "--base",
                &reference_mid,
                "--finetuned",
                &at_mid(o(&format!("acts/labelled/{}", m.name))),
                "--tokens",
                "answer",
                "--bootstrap",
                "300",
                "--device",
                &plan.device,
                "--out",
                &s(&dir.join("diff")),
            ]),
        )?;
        project(st, &m.name, dir.join("projection"))?;
    }

    // 10. Alignment pretraining (Tice et al.), when asked for: one seed of the four mixes.
    if mixes {
        st.run(
            "mixes",
            args(&[
                "organism",
                "train",
                "--mixes",
                "--seed",
                "0",
                "--out",
                &o("mixes/models"),
            ]),
        )?;
        st.run(
            "mixes",
            args(&[
                "organism",
                "eval",
                "--models",
                &o("mixes/models"),
                "--samples",
                &samples,
                "--out",
                &o("mixes/eval"),
            ]),
        )?;
    }
    Ok(())
}
