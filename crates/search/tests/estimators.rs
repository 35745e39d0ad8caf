//! The estimators against references computed independently by
//! `tests/fixtures/make_search_fixtures.py` (numpy, scikit-learn, scipy), read through real
//! activation stores (shards of 7 rows, so sequences cross shard boundaries).

use std::path::{Path, PathBuf};

use lantern_acts::{Dtype, Rows, Store, StoreMeta, StoreWriter, WriterOptions};
use lantern_search::linalg::cosine;
use lantern_search::stats::{random_cosine_mean_abs, random_cosine_p};
use lantern_search::{Method, ProbeOptions, SeqMeans, TokenSelection, direction};
use safetensors::SafeTensors;
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

struct Data {
    acts: Vec<f32>,
    seq: Vec<i64>,
    role: Vec<i64>,
    side: Vec<i64>,
    d: usize,
}

fn data() -> Data {
    let bytes = std::fs::read(fixtures().join("contrast.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let f32s = |n: &str| -> Vec<f32> {
        st.tensor(n)
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let i64s = |n: &str| -> Vec<i64> {
        st.tensor(n)
            .unwrap()
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let d = st.tensor("acts").unwrap().shape()[1];
    Data {
        acts: f32s("acts"),
        seq: i64s("seq"),
        role: i64s("role"),
        side: i64s("side"),
        d,
    }
}

/// Writes the rows with `keep(side)` into a store; with `labels`, every row labelled by side.
fn store(dir: &Path, data: &Data, keep: impl Fn(i64) -> bool, labels: bool) -> Store {
    let mut meta = StoreMeta::new(data.d, Dtype::F32, "blocks.2.hook_resid_post", "fixture");
    if labels {
        meta.labels = vec!["neg".into(), "pos".into()];
    }
    let mut w = StoreWriter::create(
        dir,
        meta,
        WriterOptions {
            shard_rows: 7,
            ..Default::default()
        },
    )
    .unwrap();
    let mut pos_in_seq = 0u32;
    for r in 0..data.seq.len() {
        if r > 0 && data.seq[r] != data.seq[r - 1] {
            pos_in_seq = 0;
        }
        if keep(data.side[r]) {
            w.push_rows(Rows {
                acts: &data.acts[r * data.d..(r + 1) * data.d],
                token_ids: &[r as u32],
                seq_ids: &[data.seq[r] as u32],
                positions: &[pos_in_seq],
                roles: Some(&[data.role[r] as u8]),
                labels: labels.then_some(&[data.side[r] as u8][..]),
            })
            .unwrap();
        }
        pos_in_seq += 1;
    }
    w.finish().unwrap();
    Store::open(dir).unwrap()
}

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("contrast.json")).unwrap())
        .unwrap()
}

fn vec_of(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn every_method_matches_numpy_and_sklearn_from_separate_and_labelled_stores() {
    let data = data();
    let tmp = tempfile::tempdir().unwrap();
    let pos_store = store(&tmp.path().join("pos"), &data, |s| s == 1, false);
    let neg_store = store(&tmp.path().join("neg"), &data, |s| s == 0, false);
    let both = store(&tmp.path().join("both"), &data, |_| true, true);
    let r = reference();
    let probe = ProbeOptions {
        c: 1.0,
        test_fraction: 0.0,
        seed: 0,
    };
    for sel in ["all", "answer"] {
        let selection: TokenSelection = sel.parse().unwrap();
        let p = SeqMeans::collect(&pos_store, None, selection).unwrap();
        let n = SeqMeans::collect(&neg_store, None, selection).unwrap();
        let lp =
            SeqMeans::collect(&both, Some(both.label_index("pos").unwrap()), selection).unwrap();
        let ln =
            SeqMeans::collect(&both, Some(both.label_index("neg").unwrap()), selection).unwrap();
        let refs = &r[sel];
        assert_eq!(p.tokens(), refs["tokens_pos"].as_u64().unwrap(), "{sel}");
        assert_eq!(n.tokens(), refs["tokens_neg"].as_u64().unwrap(), "{sel}");
        for m in Method::ALL {
            let want = vec_of(&refs["directions"][m.to_string()]);
            for (which, (a, b)) in [("separate", (&p, &n)), ("labelled", (&lp, &ln))] {
                let fit = direction(m, a, b, &probe).unwrap();
                let cos = cosine(&fit.vector, &want);
                if m == Method::Probe {
                    // An optimiser's optimum: compare by direction (issue: cosine ≥ 0.99).
                    assert!(cos > 0.9999, "{sel} {m} {which}: cos {cos}");
                } else {
                    let err = max_abs_diff(&fit.vector, &want);
                    assert!(err < 1e-5, "{sel} {m} {which}: max |Δ| {err}, cos {cos}");
                }
                assert!(fit.pos_projection > fit.neg_projection, "{m}: sign");
            }
        }
        let fit = direction(Method::Probe, &p, &n, &probe)
            .unwrap()
            .probe
            .unwrap();
        let acc = refs["probe_train_accuracy"].as_f64().unwrap();
        assert!(
            (fit.train_accuracy - acc).abs() <= 0.01,
            "{sel}: accuracy {} vs sklearn {acc}",
            fit.train_accuracy
        );
        let w = vec_of(&refs["probe_weights"]);
        let werr = max_abs_diff(&fit.weights, &w);
        assert!(werr < 1e-3, "{sel}: probe weights differ by {werr}");
        let b = refs["probe_intercept"].as_f64().unwrap();
        assert!(
            (fit.bias - b).abs() < 1e-3,
            "{sel}: intercept {} vs {b}",
            fit.bias
        );
    }
}

#[test]
fn random_direction_p_values_match_scipy() {
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("beta.json")).unwrap())
            .unwrap();
    for case in r["p_values"].as_array().unwrap() {
        let (d, c, want) = (
            case["d"].as_u64().unwrap() as usize,
            case["cos"].as_f64().unwrap(),
            case["p"].as_f64().unwrap(),
        );
        let got = random_cosine_p(c, d);
        let tol = 1e-10 + 1e-8 * want.abs();
        assert!(
            (got - want).abs() <= tol,
            "d {d} cos {c}: {got} vs scipy {want}"
        );
    }
    for case in r["mean_abs"].as_array().unwrap() {
        let d = case["d"].as_u64().unwrap() as usize;
        let want = case["mean_abs"].as_f64().unwrap();
        assert!((random_cosine_mean_abs(d) - want).abs() < 1e-12, "d {d}");
    }
}

#[test]
fn bad_inputs_are_one_line_errors_naming_the_store() {
    let data = data();
    let tmp = tempfile::tempdir().unwrap();
    let pos = store(&tmp.path().join("pos"), &data, |s| s == 1, false);
    // Drop the last negative sequence: paired methods must refuse.
    let neg_dir = tmp.path().join("neg");
    let neg = store(&neg_dir, &data, |s| s == 0, false);
    let p = SeqMeans::collect(&pos, None, TokenSelection::ALL).unwrap();
    let mut n = SeqMeans::collect(&neg, None, TokenSelection::ALL).unwrap();
    n.counts.pop();
    n.seq_ids.pop();
    n.means.truncate(n.means.len() - data.d);
    let e = direction(Method::PairedMean, &p, &n, &ProbeOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unpaired") && e.contains(&neg_dir.display().to_string()) && !e.contains('\n'),
        "{e}"
    );
    // A label the store does not have.
    let both = store(&tmp.path().join("both"), &data, |_| true, true);
    let e = both.label_index("harmful").unwrap_err().to_string();
    assert!(
        e.contains("no label 'harmful'") && e.contains("neg, pos"),
        "{e}"
    );
    // A selection that picks nothing: first-answer from a store whose rows are all prompt.
    let prompt_only = Data {
        role: vec![0; data.role.len()],
        ..data
    };
    let po = store(
        &tmp.path().join("prompt_only"),
        &prompt_only,
        |_| true,
        false,
    );
    let e = SeqMeans::collect(&po, None, "answer".parse().unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("selects no token") && e.contains("prompt_only"),
        "{e}"
    );
}
