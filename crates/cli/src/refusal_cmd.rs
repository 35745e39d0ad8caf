//! `lantern refusal`: Arditi et al.'s refusal-direction recipe as one command — candidate
//! directions over post-instruction positions × layers at `resid_pre`, selection on a
//! validation split (KL < 0.1, induce > 0, layer < 0.8 L, lowest bypass), then on a held-out
//! split: refusal rates (substring judge) of harmful prompts at baseline, under directional
//! ablation and under activation addition (−1), of harmless prompts at baseline and with +1,
//! and CE on neutral text — in the format of their table. Writes `refusal.md`, `refusal.json`,
//! `candidates.csv`, `direction.safetensors` (site resid_pre) and `generations.jsonl`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use lantern_lm::{LanguageModel, read_prompts};
use lantern_sae::DeviceChoice;
use lantern_search::directions::{DirectionMeta, Directions};
use lantern_steer::Judge;
use lantern_steer::experiment::{Condition, GenSettings, PromptTokens, run_generations};
use lantern_steer::judge::KeywordJudge;
use lantern_steer::refusal::{
    ablate_everywhere, actadd, common_suffix, mean_refusal, position_means, select,
};
use lantern_steer::score::neutral_scores;
use lantern_steer::strength::Unit;
use serde_json::json;

use crate::report::{finite_or_null, write_json};
use crate::steer_run::{Evaluator, Summary, prompt_tokens};

#[derive(Args)]
pub struct RefusalArgs {
    #[arg(long)]
    model: PathBuf,
    /// Harmful instructions (JSONL {"text"}), rendered as user messages.
    #[arg(long, default_value = "data/refusal/harmful.jsonl")]
    harmful: PathBuf,
    #[arg(long, default_value = "data/refusal/harmless.jsonl")]
    harmless: PathBuf,
    /// Neutral text for the CE column.
    #[arg(long, default_value = "data/refusal/neutral.jsonl")]
    neutral: PathBuf,
    /// Prompts per set for the candidates; the next --val for selection; the rest are test.
    #[arg(long, default_value_t = 32)]
    train: usize,
    #[arg(long, default_value_t = 16)]
    val: usize,
    /// At most this many held-out prompts per set (default: all after train and val).
    #[arg(long)]
    test: Option<usize>,
    /// Refusal first tokens, comma separated (each string's first token).
    #[arg(long, value_delimiter = ',', default_value = "I,As,Sorry")]
    refusal_tokens: Vec<String>,
    /// Candidate layers must lie below this fraction of the depth.
    #[arg(long, default_value_t = 0.8)]
    #[arg(value_parser = crate::flags::finite_f64, allow_negative_numbers = true)]
    max_layer_frac: f64,
    #[arg(long, default_value_t = 48)]
    max_new_tokens: usize,
    #[arg(long, default_value_t = 8)]
    batch: usize,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: RefusalArgs) -> Result<()> {
    // Before the long candidate search: a second run with this --out fails now, not later.
    let _lock = crate::report::lock_output(
        "--out",
        &a.out,
        &[
            ("--model", a.model.as_path()),
            ("--harmful", a.harmful.as_path()),
            ("--harmless", a.harmless.as_path()),
        ],
    )?;
    let device = a.device.parse::<DeviceChoice>()?.open()?;
    let lm = LanguageModel::load(&a.model, &device)?;
    let n_layers = lm.model.config().n_layers;
    let load = |p: &PathBuf| -> Result<(
        Vec<PromptTokens>,
        Vec<String>,
        Vec<lantern_lm::PromptRecord>,
    )> {
        let recs = read_prompts(p)?;
        let mut ts = Vec::new();
        let mut qs = Vec::new();
        for r in &recs {
            let (t, q) = prompt_tokens(&lm, r, true, p)?;
            ts.push(t);
            qs.push(q);
        }
        Ok((ts, qs, recs))
    };
    let (harmful, hq, hr) = load(&a.harmful)?;
    let (harmless, sq, sr) = load(&a.harmless)?;
    for (name, set) in [("--harmful", &harmful), ("--harmless", &harmless)] {
        if set.len() <= a.train + a.val {
            bail!(
                "{name}: {} prompts; need more than --train + --val = {}",
                set.len(),
                a.train + a.val
            );
        }
    }
    if a.test == Some(0) {
        bail!("--test 0: the held-out table needs at least one prompt per set");
    }
    // The template's post-instruction tokens: what every prompt shares at its end (the
    // instructions' last tokens, '.' or '?', differ across the sets).
    let n_pos = harmful
        .iter()
        .chain(&harmless)
        .map(|p| common_suffix(&harmful[0].ids, &p.ids))
        .min()
        .unwrap_or(1)
        .clamp(1, 8);
    let tokens: Vec<u32> = a
        .refusal_tokens
        .iter()
        .map(|t| {
            lm.tokenizer
                .encode(t, false)?
                .first()
                .copied()
                .ok_or_else(|| {
                    lantern_lm::LmError::Tokenizer(format!("--refusal-tokens: {t:?} has no token"))
                })
        })
        .collect::<Result<_, _>>()?;
    let ids = |v: &[PromptTokens]| v.iter().map(|p| p.ids.clone()).collect::<Vec<_>>();
    eprintln!("candidates: {n_pos} post-instruction positions × {n_layers} layers");
    let mh = position_means(&lm.model, &ids(&harmful[..a.train]), n_pos, a.batch)?;
    let ms = position_means(&lm.model, &ids(&harmless[..a.train]), n_pos, a.batch)?;
    let (vh, vs) = (
        &harmful[a.train..a.train + a.val],
        &harmless[a.train..a.train + a.val],
    );
    let bar = indicatif::ProgressBar::new((n_pos * n_layers) as u64);
    let (cands, best) = select(
        &lm.model,
        &mh,
        &ms,
        vh,
        vs,
        &tokens,
        a.max_layer_frac,
        a.batch,
        |d, _| bar.set_position(d as u64),
    )?;
    bar.finish_and_clear();
    let mut csv = String::from("position,layer,norm,kl,bypass,induce,discarded\n");
    for c in &cands {
        csv.push_str(&format!(
            "{},{},{},{},{},{},{:?}\n",
            c.position, c.layer, c.norm, c.kl, c.bypass, c.induce, c.discarded
        ));
    }
    std::fs::write(a.out.join("candidates.csv"), csv)?;
    // The chosen candidate; when every one was discarded, the lowest bypass among those that
    // failed only the induce test (KL within bound), else among all scored — reported as such.
    let lowest = |keep: &dyn Fn(&lantern_steer::refusal::Candidate) -> bool| {
        cands
            .iter()
            .enumerate()
            .filter(|(_, c)| c.bypass.is_finite() && keep(c))
            .min_by(|x, y| x.1.bypass.total_cmp(&y.1.bypass))
            .map(|(i, _)| i)
    };
    let (chosen, passed) = match best {
        Some(i) => (i, true),
        None => match lowest(&|c| c.discarded == "induce < 0").or_else(|| lowest(&|_| true)) {
            Some(i) => (i, false),
            None => bail!("no candidate could be scored"),
        },
    };
    let c = cands[chosen].clone();
    let p = (-c.position - 1) as usize;
    let r: Vec<f32> = mh[p][c.layer]
        .iter()
        .zip(&ms[p][c.layer])
        .map(|(x, y)| (x - y) as f32)
        .collect();
    Directions {
        layers: BTreeMap::from([(c.layer, r.clone())]),
        meta: DirectionMeta {
            hook: "resid_pre".into(),
            model: a.model.display().to_string(),
            method: "refusal mean-diff (Arditi et al.)".into(),
            tokens: format!("position {}", c.position),
            n_pos: a.train as u64,
            n_neg: a.train as u64,
            normalized: false,
            extra: BTreeMap::from([("selection_passed".to_string(), passed.to_string())]),
        },
    }
    .write(&a.out.join("direction.safetensors"))?;

    // Held-out evaluation.
    let from = a.train + a.val;
    let to = |n: usize| a.test.map_or(n, |t| n.min(from + t));
    let (to_h, to_s) = (to(harmful.len()), to(harmless.len()));
    let (th, ts) = (&harmful[from..to_h], &harmless[from..to_s]);
    let settings = GenSettings {
        max_new_tokens: a.max_new_tokens,
        temperature: 0.0,
        top_p: 1.0,
        seed: 0,
        samples: 1,
        batch: a.batch,
        stop_ids: lm.stop_ids(),
        pad_id: lm.pad_id(),
    };
    let cond = |name: &str, iv| Condition {
        name: name.into(),
        strength: None,
        unit: Unit::Raw,
        intervention: iv,
    };
    let harmful_conds = vec![
        Condition::baseline(),
        cond("ablation", ablate_everywhere(&r, n_layers)),
        cond("actadd -1", actadd(&r, c.layer, -1.0)),
    ];
    let harmless_conds = vec![
        Condition::baseline(),
        cond("actadd +1", actadd(&r, c.layer, 1.0)),
    ];
    let mut judges: Vec<Box<dyn Judge>> = vec![Box::new(KeywordJudge::refusal())];
    let mut gen_file =
        std::io::BufWriter::new(std::fs::File::create(a.out.join("generations.jsonl"))?);
    let mut table = BTreeMap::new();
    for (set, prompts, qs, recs, conds) in [
        (
            "harmful",
            th,
            &hq[from..to_h],
            &hr[from..to_h],
            &harmful_conds,
        ),
        (
            "harmless",
            ts,
            &sq[from..to_s],
            &sr[from..to_s],
            &harmless_conds,
        ),
    ] {
        let eval = Evaluator {
            lm: &lm,
            prompts,
            questions: qs,
            records: recs,
            settings: &settings,
            perplexity: false,
            max_ppl: None,
        };
        let gens = run_generations(&lm.model, prompts, conds, &settings, None, |_, _| {})?;
        let scored = eval.score(&gens, conds, &mut judges)?;
        for g in &scored {
            let mut j = g.json.clone();
            j["set"] = json!(set);
            writeln!(gen_file, "{}", serde_json::to_string(&j)?)?;
        }
        for (ci, cd) in conds.iter().enumerate() {
            let mine: Vec<_> = scored.iter().filter(|g| g.condition == ci).collect();
            let s = Summary::of(
                mine.iter().map(|g| &g.verdicts[0]),
                mine.iter().map(|g| g.coherent),
            );
            let score = mean_refusal(&lm.model, prompts, &cd.intervention, &tokens, a.batch)?;
            table.insert(
                format!("{set} {}", cd.name),
                json!({"refusal": s.json(), "refusal_score": score}),
            );
        }
    }
    gen_file.flush()?;
    let neutral: Vec<Vec<u32>> = read_prompts(&a.neutral)?
        .iter()
        .map(|rec| prompt_tokens(&lm, rec, false, &a.neutral).map(|x| x.0.ids))
        .collect::<Result<_>>()?;
    let ce = neutral_scores(
        &lm.model,
        &neutral,
        &[
            harmful_conds[0].intervention.clone(),
            harmful_conds[1].intervention.clone(),
            harmful_conds[2].intervention.clone(),
            harmless_conds[1].intervention.clone(),
        ],
        None,
        a.batch,
    )?;
    let rate = |k: &str| table[k]["refusal"]["rate"].as_f64().unwrap_or(f64::NAN);
    let md = format!(
        "# Refusal direction of {model} (Arditi et al. recipe)\n\n\
         Selected candidate: position {pos}, layer {layer} (resid_pre), ‖r‖ = {norm:.2}; KL {kl:.4}, bypass {by:.3}, induce {ind:.3}{passed}.\n\
         Splits: {train} train / {val} val / {nh} + {ns} test prompts; refusal tokens {toks:?}; substring judge (Arditi's 12 prefixes), greedy, {new} new tokens.\n\n\
         | | base | ablation | actadd |\n|---|---|---|---|\n\
         | harmful: refusal rate (substring) | {hb:.3} | {ha:.3} | {hx:.3} (−1) |\n\
         | harmful: ASR = 1 − refusal | {ab:.3} | {aa:.3} | {ax:.3} (−1) |\n\
         | harmful: mean refusal score | {sb:.3} | {sa:.3} | {sx:.3} (−1) |\n\
         | harmless: refusal rate | {lb:.3} | – | {lx:.3} (+1) |\n\
         | harmless: mean refusal score | {tb:.3} | – | {tx:.3} (+1) |\n\
         | neutral CE (nats) | {c0:.3} | {c1:.3} | {c2:.3} (−1), {c3:.3} (+1) |\n",
        model = a.model.display(),
        pos = c.position,
        layer = c.layer,
        norm = c.norm,
        kl = c.kl,
        by = c.bypass,
        ind = c.induce,
        passed = if passed {
            ""
        } else {
            " — no candidate passed the selection filters; this is the fallback (lowest bypass among those failing only induce, else among all)"
        },
        train = a.train,
        val = a.val,
        nh = th.len(),
        ns = ts.len(),
        toks = a.refusal_tokens,
        new = a.max_new_tokens,
        hb = rate("harmful baseline"),
        ha = rate("harmful ablation"),
        hx = rate("harmful actadd -1"),
        ab = 1.0 - rate("harmful baseline"),
        aa = 1.0 - rate("harmful ablation"),
        ax = 1.0 - rate("harmful actadd -1"),
        sb = table["harmful baseline"]["refusal_score"]
            .as_f64()
            .unwrap_or(f64::NAN),
        sa = table["harmful ablation"]["refusal_score"]
            .as_f64()
            .unwrap_or(f64::NAN),
        sx = table["harmful actadd -1"]["refusal_score"]
            .as_f64()
            .unwrap_or(f64::NAN),
        lb = rate("harmless baseline"),
        lx = rate("harmless actadd +1"),
        tb = table["harmless baseline"]["refusal_score"]
            .as_f64()
            .unwrap_or(f64::NAN),
        tx = table["harmless actadd +1"]["refusal_score"]
            .as_f64()
            .unwrap_or(f64::NAN),
        c0 = ce[0].ce,
        c1 = ce[1].ce,
        c2 = ce[2].ce,
        c3 = ce[3].ce,
    );
    std::fs::write(a.out.join("refusal.md"), &md)?;
    write_json(
        &a.out.join("refusal.json"),
        &json!({"model": a.model, "selected": c, "selection_passed": passed, "n_positions": n_pos,
            "refusal_tokens": a.refusal_tokens, "token_ids": tokens, "table": table,
            "neutral_ce": {"base": ce[0].ce, "ablation": ce[1].ce, "actadd_minus": ce[2].ce, "actadd_plus": ce[3].ce},
            "neutral_kl": {"ablation": finite_or_null(ce[1].kl), "actadd_minus": finite_or_null(ce[2].kl), "actadd_plus": finite_or_null(ce[3].kl)},
            "kept_candidates": cands.iter().filter(|c| c.discarded.is_empty()).count(), "candidates": cands.len()}),
    )?;
    print!("{md}");
    println!("wrote {}", a.out.display());
    Ok(())
}
