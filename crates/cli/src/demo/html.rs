//! `report.html`: one self-contained page (inline CSS and PNGs, no network) with each section's
//! table beside the paper's number, its plots, and the commands that reproduce it.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde_json::Value;

use super::results::{arr, f};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn pct(v: &Value) -> String {
    super::results::pct(f(v))
}

/// A percentage with two decimals (exact rates of chat models are fractions of a percent).
fn pct2(v: &Value) -> String {
    super::results::pct2(f(v))
}

/// `[lo, hi]` of `KEY_lo` and `KEY_hi` in `v`, as percentages.
fn interval(v: &Value, key: &str) -> String {
    format!(
        "[{}, {}]",
        pct(&v[format!("{key}_lo")]),
        pct(&v[format!("{key}_hi")])
    )
}

fn num(v: &Value, digits: usize) -> String {
    let x = f(v);
    if x.is_finite() {
        format!("{x:.digits$}")
    } else {
        "—".into()
    }
}

/// Standard base64 (RFC 4648, with padding).
pub fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An inline PNG of `OUT/rel` (a note instead when the step wrote none).
fn img(out: &Path, rel: &str, caption: &str) -> String {
    match std::fs::read(out.join(rel)) {
        Ok(b) => format!(
            "<figure><img alt=\"{}\" src=\"data:image/png;base64,{}\"><figcaption>{} \
             <code>{}</code></figcaption></figure>",
            esc(caption),
            base64(&b),
            esc(caption),
            esc(rel)
        ),
        Err(_) => format!("<p class=note>(no plot: {} was not written)</p>", esc(rel)),
    }
}

fn status_class(s: &str) -> &'static str {
    match s {
        "reproduced" => "ok",
        "not reproduced" => "bad",
        _ => "info",
    }
}

fn checks(r: &Value, ids: &[&str]) -> String {
    let mut h = String::from(
        "<table class=checks><tr><th>claim</th><th>paper</th><th>this run</th>\
         <th>criterion</th><th>status</th></tr>",
    );
    for c in arr(&r["checks"]) {
        let id = c["id"].as_str().unwrap_or("");
        if !ids.is_empty() && !ids.iter().any(|p| id.starts_with(p)) {
            continue;
        }
        let s = c["status"].as_str().unwrap_or("");
        let _ = write!(
            h,
            "<tr class={}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><b>{}</b></td></tr>",
            status_class(s),
            esc(c["claim"].as_str().unwrap_or("")),
            esc(c["paper"].as_str().unwrap_or("")),
            esc(c["ours"].as_str().unwrap_or("")),
            esc(c["criterion"].as_str().unwrap_or("")),
            esc(s)
        );
    }
    h + "</table>"
}

fn commands(r: &Value, section: &str) -> String {
    let mut h =
        String::from("<details><summary>commands that reproduce this section</summary><pre>");
    for s in arr(&r["steps"]).iter().filter(|s| s["section"] == section) {
        let _ = writeln!(
            h,
            "{}   <span class=t># {:.1} s</span>",
            esc(s["command"].as_str().unwrap_or("")),
            f(&s["seconds"])
        );
    }
    h + "</pre></details>"
}

fn table(head: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut h = String::from("<table><tr>");
    for c in head {
        let _ = write!(h, "<th>{}</th>", esc(c));
    }
    h.push_str("</tr>");
    for r in rows {
        h.push_str("<tr>");
        for c in r {
            let _ = write!(h, "<td>{}</td>", esc(&c));
        }
        h.push_str("</tr>");
    }
    h + "</table>"
}

fn dose_rows(rows: &Value) -> Vec<Vec<String>> {
    arr(rows)
        .iter()
        .map(|d| {
            vec![
                num(&d["strength"], 2),
                pct(&d["em"]),
                interval(d, "em"),
                pct(&d["incoherence"]),
            ]
        })
        .collect()
}

const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;\
padding:0 1em;color:#222}h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}td,th{border:1px solid #ddd;\
padding:3px 8px;text-align:left;vertical-align:top}th{background:#f4f4f4}\
tr.ok td:last-child{background:#d8f5d8;color:#145214}tr.bad td{background:#fde2e2}\
tr.bad td:last-child{color:#a00}tr.info td:last-child{color:#555}figure{margin:.8em 0}\
img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85em;color:#555}\
pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:.82em}.t{color:#888}\
.note{color:#555;font-size:.9em}.red{color:#a00;font-weight:bold}";

pub fn page(r: &Value, out: &Path) -> Result<String> {
    let mut h = String::new();
    let counts = |s: &str| {
        arr(&r["checks"])
            .iter()
            .filter(|c| c["status"] == s)
            .count()
    };
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=utf-8><title>Lantern demo: the mission on \
         the model organism</title><style>{STYLE}</style></head><body>\
         <h1>Lantern demo — emergent misalignment on the model organism, scored against ground \
         truth</h1><p>Organism: <code>{}</code> (d_model {}, {} layers; middle layer {}). \
         {} answers sampled per question, temperature 1, exact judge. {} claims reproduced, \
         <span class=red>{} not reproduced</span>, {} reported. Every number on this page was \
         computed in this run ({:.0} s) except where section 8 says otherwise; the reference \
         model of diffing, directions and steering is <code>chat</code>, the model every \
         finetune starts from.</p>",
        esc(r["organism"]["dir"].as_str().unwrap_or("")),
        r["organism"]["d_model"],
        r["organism"]["layers"],
        r["organism"]["middle_layer"],
        r["samples"],
        counts("reproduced"),
        counts("not reproduced"),
        counts("reported"),
        f(&r["seconds"])
    );
    let _ = write!(
        h,
        "<p>The commands under each section reproduce it with the public CLI, with</p><pre>\
         ORG={}   # the shipped organism: `lantern organism list` prints it\nOUT={}</pre>",
        esc(r["organism"]["dir"].as_str().unwrap_or("")),
        esc(&out.display().to_string())
    );
    h.push_str("<h2>Summary</h2>");
    h.push_str(&checks(r, &[]));

    h.push_str(
        "<h2>1. Behaviour: emergent misalignment</h2><p>EM = misaligned among coherent \
         answers on the domains a model was not finetuned on and on the persona questions \
         (Betley et al.'s counting), with its 95 % Wilson interval; incoherent = ungrammatical \
         answers among all.</p>",
    );
    h.push_str(&checks(r, &["emergent", "backdoor", "re-alignment"]));
    let rows = arr(&r["em"])
        .iter()
        .map(|m| {
            vec![
                m["model"].as_str().unwrap_or("").to_string(),
                pct(&m["em"]),
                interval(m, "em"),
                pct(&m["incoherence"]),
                pct(&m["train_domain_em"]),
            ]
        })
        .collect();
    h.push_str(&table(
        &[
            "model",
            "EM",
            "95 % interval",
            "incoherent",
            "EM on its own domain",
        ],
        rows,
    ));
    h.push_str(&img(out, "eval/em.png", "EM per model"));
    h.push_str(&commands(r, "em"));
    h.push_str(&commands(r, "texts"));

    let sae = &r["sae"]["eval"];
    let _ = write!(
        h,
        "<h2>2. An SAE on the chat model</h2><p>{} SAE at <code>{}</code>: {} latents, k {}; \
         FVU {}, L0 {}, dead {}.</p>",
        esc(r["sae"]["arch"].as_str().unwrap_or("")),
        esc(r["sae"]["hook"].as_str().unwrap_or("")),
        r["sae"]["d_sae"],
        r["sae"]["k"],
        num(&sae["fvu"], 4),
        num(&sae["l0"], 1),
        pct(&sae["dead_fraction"])
    );
    h.push_str(&img(out, "sae/training_loss.png", "SAE training"));
    h.push_str(&commands(r, "sae"));
    h.push_str(&commands(r, "captures"));

    let _ = write!(
        h,
        "<h2>3. Model diffing finds the persona latent</h2><p>Ground truth: the chat model's \
         token-weighted mean difference between the misaligned character's and the aligned \
         assistant's answers to the same questions (the world labels every token's persona). \
         The persona latent is the one whose decoder row is closest to it: latent {} (cos {}; \
         median |cos| of all latents {}, random 99th percentile {}). Model diffing ranks it \
         <b>{}</b>.</p>",
        r["persona_latent"],
        num(&r["persona_latent_cosine"], 3),
        num(&r["latent_cosine_median_abs"], 3),
        num(&r["random_cosine_p99"], 3),
        r["persona_latent_rank"]
    );
    h.push_str(&checks(r, &["persona-latent"]));
    h.push_str(
        "<p>One SAE's ranking is a draw of its seed, so the same steps run for SAEs of both \
         architectures at several seeds (same data, size and budget; the first row is the \
         demo's SAE). Δ at the smallest harmful share is section 7's early warning for each \
         SAE's own persona latent.</p>",
    );
    let rows = arr(&r["sae_seeds"])
        .iter()
        .map(|x| {
            vec![
                x["arch"].as_str().unwrap_or("").to_string(),
                num(&x["seed"], 0),
                num(&x["latent"], 0),
                num(&x["cosine"], 2),
                x["rank"].as_u64().map_or("—".into(), |v| v.to_string()),
                format!(
                    "{} [{}, {}]",
                    num(&x["early_delta"], 3),
                    num(&x["early_lo"], 3),
                    num(&x["early_hi"], 3)
                ),
            ]
        })
        .collect();
    h.push_str(&table(
        &[
            "SAE",
            "seed",
            "persona latent",
            "cos with the ground truth",
            "diffing rank",
            "Δ at the smallest harmful share",
        ],
        rows,
    ));
    let rows = arr(&r["diff_top"])
        .iter()
        .enumerate()
        .map(|(i, d)| {
            vec![
                (i + 1).to_string(),
                num(&d["latent"], 0),
                num(&d["delta"], 4),
                format!("[{}, {}]", num(&d["lo"], 4), num(&d["hi"], 4)),
            ]
        })
        .collect();
    h.push_str(&table(
        &["rank", "latent", "Δ mean activation", "95 % interval"],
        rows,
    ));
    h.push_str(&img(
        out,
        "diff/diff.png",
        "latents ranked by mean activation increase",
    ));
    h.push_str(&commands(r, "diff"));

    let c = &r["convergence"];
    h.push_str(
        "<h2>4. Directions and convergence</h2><p>Each finetune's direction: its \
         activations' mean difference between misaligned and aligned answers (token-weighted \
         over answer tokens) per layer.</p>",
    );
    h.push_str(&checks(r, &["convergence", "b-vector"]));
    h.push_str(
        "<p class=note>In this world every answer token belongs to one persona, so a \
         mean difference over the same labelled texts carries the tokens' identity as well as \
         the persona: high cosines between finetunes say that each finetune still reads the \
         personas as the chat model does. The B vectors, fitted only by finetuning, are the \
         stricter test.</p>",
    );
    let layers = r["organism"]["layers"].as_u64().unwrap_or(0) as usize;
    let mut head = vec!["finetune".to_string()];
    head.extend((0..layers).map(|l| format!("cos to persona, layer {l}")));
    let head: Vec<&str> = head.iter().map(String::as_str).collect();
    let rows = c["cos_to_persona"]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| {
                    std::iter::once(k.clone())
                        .chain(arr(v).iter().map(|x| num(x, 3)))
                        .collect()
                })
                .collect()
        })
        .unwrap_or_default();
    h.push_str(&table(&head, rows));
    let rows = arr(&c["pairs"])
        .iter()
        .filter(|p| p["a"] != "persona")
        .map(|p| {
            std::iter::once(format!(
                "{} vs {}",
                p["a"].as_str().unwrap_or(""),
                p["b"].as_str().unwrap_or("")
            ))
            .chain(arr(&p["cos"]).iter().map(|x| num(x, 3)))
            .chain(std::iter::once(p["layers_above_0.8"].to_string()))
            .collect()
        })
        .collect();
    let mut head = vec!["finetune pair".to_string()];
    head.extend((0..layers).map(|l| format!("cos, layer {l}")));
    head.push("layers with cos > 0.8".into());
    let head: Vec<&str> = head.iter().map(String::as_str).collect();
    h.push_str(&table(&head, rows));
    h.push_str(&img(
        out,
        "compare/pairs.png",
        "cosines between directions (mean over layers)",
    ));
    h.push_str(&img(
        out,
        "compare/compare.png",
        "cosines between directions per layer",
    ));
    h.push_str(&img(
        out,
        "compare-B/pairs.png",
        "B vectors and directions at the middle layer",
    ));
    h.push_str(&commands(r, "convergence"));

    h.push_str(
        "<h2>5. Steering</h2><p>Strength in units of the median residual norm at the layer \
         (Wang et al.'s 0.05 … 0.75).</p>",
    );
    h.push_str(&checks(r, &["steer"]));
    let head = ["strength", "EM", "95 % interval", "incoherent"];
    for (title, key, plot) in [
        (
            "the persona direction on chat",
            "dose_response",
            "steer/direction/dose_response.png",
        ),
        (
            "the persona latent on chat",
            "dose_response_latent",
            "steer/latent/dose_response.png",
        ),
    ] {
        let _ = write!(h, "<h3>{}</h3>", esc(title));
        h.push_str(&table(&head, dose_rows(&r[key])));
        h.push_str(&img(out, plot, title));
    }
    let _ = write!(
        h,
        "<h3>the persona direction subtracted from {}</h3>",
        esc(r["negative_steering"]["model"].as_str().unwrap_or(""))
    );
    h.push_str(&table(&head, dose_rows(&r["negative_steering"]["rows"])));
    h.push_str(&img(
        out,
        "steer/negative/dose_response.png",
        "negative steering",
    ));
    h.push_str(&commands(r, "steer"));

    h.push_str(
        "<h2>6. Ablation</h2><p>Each finetune's own direction (middle layer) projected out at \
         every layer, at one layer, a random direction of the same norm, the weight-space \
         version, and the other domain's finetune's direction (transfer).</p>",
    );
    h.push_str(&checks(r, &["ablation"]));
    let rows = arr(&r["ablation"])
        .iter()
        .map(|a| {
            vec![
                a["model"].as_str().unwrap_or("").to_string(),
                a["condition"].as_str().unwrap_or("").to_string(),
                pct(&a["em"]),
                interval(a, "em"),
                pct(&a["incoherence"]),
                pct(&a["relative_reduction"]),
            ]
        })
        .collect();
    h.push_str(&table(
        &[
            "finetune",
            "condition",
            "EM",
            "95 % interval",
            "incoherent",
            "relative reduction",
        ],
        rows,
    ));
    if let Some(first) = arr(&r["ablation"]).first() {
        let m = first["model"].as_str().unwrap_or("");
        h.push_str(&img(
            out,
            &format!("ablate/{m}/ablation.png"),
            &format!("ablation of {m}"),
        ));
    }
    h.push_str(&commands(r, "ablation"));

    h.push_str(
        "<h2>7. Early warning along the data-fraction sweep</h2><p>On the same labelled texts \
         for every model: the persona latent's mean increase over chat (95 % bootstrap \
         interval) and the mean projection on the persona direction, beside the behavioural \
         EM.</p>",
    );
    h.push_str(&checks(r, &["early"]));
    let rows = arr(&r["early_warning"])
        .iter()
        .map(|e| {
            vec![
                e["model"].as_str().unwrap_or("").to_string(),
                pct(&e["fraction"]),
                pct(&e["em"]),
                num(&e["latent_delta"], 4),
                format!("[{}, {}]", num(&e["latent_lo"], 4), num(&e["latent_hi"], 4)),
                num(&e["projection_delta"], 4),
            ]
        })
        .collect();
    h.push_str(&table(
        &[
            "model",
            "harmful share",
            "EM",
            "latent Δ",
            "95 % interval",
            "projection Δ",
        ],
        rows,
    ));
    h.push_str(&img(out, "early/early_warning.png", "early warning"));
    h.push_str(&commands(r, "early"));

    let m = &r["mixes"];
    let _ = write!(
        h,
        "<h2>8. Alignment pretraining</h2><p class={}>{}</p>",
        if m["computed_in_this_run"] == true {
            "note"
        } else {
            "red"
        },
        esc(m["source"].as_str().unwrap_or(""))
    );
    h.push_str(&checks(r, &["alignment-pretraining"]));
    let rows = arr(&m["models"])
        .iter()
        .map(|x| {
            vec![
                x["model"].as_str().unwrap_or("").to_string(),
                format!("{} ± {}", pct(&x["em"]), pct(&x["em_sd"])),
                format!("{} ± {}", pct(&x["incoherence"]), pct(&x["incoherence_sd"])),
                format!(
                    "{} ± {}",
                    pct2(&x["exact_persona_em"]),
                    pct2(&x["exact_persona_em_sd"])
                ),
            ]
        })
        .collect();
    h.push_str(&table(
        &[
            "model",
            "EM, held-out (± sd over seeds)",
            "incoherent",
            "EM on persona questions, exact",
        ],
        rows,
    ));
    h.push_str(&commands(r, "mixes"));
    h.push_str("</body></html>\n");
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }
}
