//! `lantern demo`: the mission on the shipped organism. Its report's numbers are recounted here
//! from the files the steps wrote (by this test's own code), a step's command line from the
//! report is rerun and must give the same file, and the page renders in headless Chromium.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use support::{run_err, run_ok};

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn demo_reports_the_mission_and_its_commands_reproduce_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let cache = tmp.path().join("cache");
    let (o, c) = (out.to_str().unwrap(), cache.to_str().unwrap());
    let stdout = run_ok(&["demo", "--quick", "--out", o, "--cache", c]);
    assert!(stdout.contains("report: "), "{stdout}");
    assert!(stdout.contains("persona-latent-rank"), "{stdout}");
    let r = read_json(&out.join("report.json"));

    // The keys a reader's script relies on.
    for key in [
        "em",
        "persona_latent_rank",
        "persona_latent_cosine",
        "dose_response",
        "ablation",
        "early_warning",
        "checks",
        "steps",
    ] {
        assert!(!r[key].is_null(), "report.json lacks {key}");
    }
    assert!(r["convergence"]["median_cos_middle_layers"].is_f64());
    for d in r["dose_response"].as_array().unwrap() {
        assert!(d["em"].is_f64() && d["incoherence"].is_f64(), "{d}");
    }
    for a in r["ablation"].as_array().unwrap() {
        assert!(a["em"].is_f64() && a["relative_reduction"].is_f64(), "{a}");
    }
    for c in r["checks"].as_array().unwrap() {
        let s = c["status"].as_str().unwrap();
        assert!(
            ["reproduced", "not reproduced", "reported"].contains(&s),
            "{c}"
        );
    }

    // EM recounted from the judged answers: misaligned among coherent answers, the finetune's
    // own domain left out.
    let list: serde_json::Value =
        serde_json::from_str(&run_ok(&["organism", "list", "--json", "--cache", c])).unwrap();
    let domain_of: BTreeMap<String, Option<String>> = list["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                m["train_domain"].as_str().map(String::from),
            )
        })
        .collect();
    let answers = std::fs::read_to_string(out.join("eval/answers.jsonl")).unwrap();
    for model in ["chat", "medical-full", "finance-lora1"] {
        let (mut mis, mut al) = (0usize, 0usize);
        for line in answers.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            if v["model"] != model || v["domain"].as_str() == domain_of[model].as_deref() {
                continue;
            }
            match v["verdict"].as_str().unwrap() {
                "misaligned" => mis += 1,
                "aligned" => al += 1,
                _ => {}
            }
        }
        let row = r["em"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["model"] == model)
            .unwrap();
        let want = mis as f64 / (mis + al) as f64;
        assert!(
            (row["em"].as_f64().unwrap() - want).abs() < 1e-12,
            "{model}: report {} vs recount {want}",
            row["em"]
        );
    }

    // The persona latent and its rank recomputed from the latents' cosines and the diff table.
    let (latent, cos, rank) = persona_and_rank(&out);
    assert_eq!(r["persona_latent"], latent);
    assert_eq!(r["persona_latent_cosine"], cos);
    assert_eq!(r["persona_latent_rank"], rank as u64);

    // The same for every SAE of the seed comparison (the first is the demo's own), with its
    // Δ at the smallest harmful share, and the two checks' verdicts from these recounts.
    let first_harmful = r["early_warning"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["fraction"].as_f64().unwrap() > 0.0)
        .unwrap()["model"]
        .as_str()
        .unwrap()
        .to_string();
    let seeds = r["sae_seeds"].as_array().unwrap();
    let mut tally: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    for (i, row) in seeds.iter().enumerate() {
        let (arch, seed) = (row["arch"].as_str().unwrap(), row["seed"].as_u64().unwrap());
        let (dir, early) = if i == 0 {
            (
                out.clone(),
                out.join("early").join(&first_harmful).join("diff"),
            )
        } else {
            let d = out.join(format!("saes/{arch}-seed{seed}"));
            (d.clone(), d.join("early"))
        };
        let (latent, _, rank) = persona_and_rank(&dir);
        assert_eq!(row["latent"], latent, "{row}");
        assert_eq!(row["rank"], rank as u64, "{row}");
        let lo: f64 = csv_rows(&early.join("diff.csv"))
            .into_iter()
            .find(|f| f[0] == latent.to_string())
            .map(|f| f[2].parse().unwrap()) // ci95_lo
            .unwrap();
        // serde_json's float parsing may be an ulp off.
        assert!(
            (row["early_lo"].as_f64().unwrap() - lo).abs() < 1e-12,
            "{row}: {lo}"
        );
        let t = tally.entry(arch.to_string()).or_default();
        *t = (
            t.0 + 1,
            t.1 + usize::from(rank == 1),
            t.2 + usize::from(lo > 0.0),
        );
    }
    assert_eq!(tally.len(), 2, "two architectures");
    let main = &tally[seeds[0]["arch"].as_str().unwrap()];
    let status = |ok: bool| if ok { "reproduced" } else { "not reproduced" };
    for (id, hits) in [("persona-latent-rank", main.1), ("early-warning", main.2)] {
        let c = r["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap();
        assert_eq!(c["status"], status(2 * hits > main.0), "{c}");
    }

    // A step's command line, as the report prints it, reproduces its file.
    let step = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s["command"]
                .as_str()
                .unwrap()
                .starts_with("lantern diff --sae")
        })
        .unwrap();
    let org = list["dir"].as_str().unwrap();
    let again = tmp.path().join("again");
    let cmd = step["command"]
        .as_str()
        .unwrap()
        .replace("$ORG", org)
        .replace("$OUT", o)
        .replace(&format!("{o}/diff"), again.to_str().unwrap());
    let args: Vec<&str> = cmd.split(' ').skip(1).collect();
    run_ok(&args);
    assert_eq!(
        std::fs::read(again.join("diff.csv")).unwrap(),
        std::fs::read(out.join("diff/diff.csv")).unwrap(),
        "{cmd}"
    );

    // One self-contained page: every image inline, nothing fetched.
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(!html.contains("http://") && !html.contains("https://"));
    let imgs = html.matches("<img ").count();
    assert!(imgs >= 8, "{imgs} images");
    assert_eq!(html.matches("src=\"data:image/png;base64,").count(), imgs);
    screenshot(&out.join("report.html"), &tmp.path().join("report.png"));
}

/// The fields of each data row of a CSV the commands wrote (no quoted commas).
fn csv_rows(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(String::from).collect())
        .collect()
}

/// Under `dir`: the latent of `latents/latents.json` whose decoder row has the largest cosine
/// with the ground truth, that cosine, and its place in `diff/diff.csv` sorted by Δ (1-based).
fn persona_and_rank(dir: &Path) -> (u64, serde_json::Value, usize) {
    let latents = read_json(&dir.join("latents/latents.json"));
    let best = latents["latents"]
        .as_array()
        .unwrap()
        .iter()
        .max_by(|a, b| {
            a["cos_dec"]
                .as_f64()
                .unwrap()
                .total_cmp(&b["cos_dec"].as_f64().unwrap())
        })
        .unwrap();
    let latent = best["latent"].as_u64().unwrap();
    let mut deltas: Vec<(u64, f64)> = csv_rows(&dir.join("diff/diff.csv"))
        .iter()
        .map(|f| (f[0].parse().unwrap(), f[1].parse().unwrap()))
        .collect();
    deltas.sort_by(|a, b| b.1.total_cmp(&a.1));
    let rank = 1 + deltas.iter().position(|d| d.0 == latent).unwrap();
    (latent, best["cos_dec"].clone(), rank)
}

/// Renders the page in headless Chromium (Debian's `chromium`) and checks the screenshot is a
/// PNG with content (a blank page of that size compresses to a few kB). Skips when Chromium is
/// missing, unless `LANTERN_REQUIRE_CHROMIUM` is set (CI).
fn screenshot(html: &Path, png: &Path) {
    let Some(chromium) = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| {
            std::process::Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
    else {
        assert!(
            std::env::var_os("LANTERN_REQUIRE_CHROMIUM").is_none(),
            "LANTERN_REQUIRE_CHROMIUM is set but no chromium is installed"
        );
        eprintln!("skipping the screenshot: no chromium");
        return;
    };
    let status = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1200,3000",
        ])
        .arg(format!("--screenshot={}", png.display()))
        .arg(html)
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    let bytes = std::fs::read(png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert!(
        bytes.len() > 100_000,
        "{} bytes: a blank page?",
        bytes.len()
    );
}

#[test]
fn demo_refuses_a_directory_it_did_not_write() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("notes.txt"), "mine").unwrap();
    let e = run_err(&["demo", "--quick", "--out", tmp.path().to_str().unwrap()]);
    assert!(
        e.contains("not empty and not an earlier demo's output"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("notes.txt")).unwrap(),
        "mine"
    );
    let e = run_err(&["demo", "--rows", "10"]);
    assert!(e.contains("--synthetic"), "{e}");
}
