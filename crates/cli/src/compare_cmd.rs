//! `lantern compare`: do directions converge? Cosine per common layer for every pair of
//! files (with the random-direction null and, given the stores, a label-permutation null),
//! layer × layer within each file; compare.json, compare.csv and plots.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use lantern_plot::{LineChart, Series};
use lantern_search::sequences::layer_of;
use lantern_search::{
    Directions, SeqMeans, TokenSelection, compare_pair, layer_matrix, layer_stores,
    permutation_null,
};
use serde_json::json;

use crate::report::write_json;
use crate::search_flag_error;

#[derive(Args)]
pub struct CompareArgs {
    /// Direction files (two or more for pairwise cosines; one for its layer × layer matrix).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Only these layers (comma-separated).
    #[arg(long, value_delimiter = ',')]
    layers: Vec<usize>,
    /// Cosine above which a layer counts as converged (Soligo et al. report > 0.8).
    #[arg(long, default_value_t = 0.8)]
    #[arg(value_parser = crate::flags::finite_f64, allow_negative_numbers = true)]
    threshold: f64,
    /// The positive store behind each file, in file order (with --neg): enables the
    /// label-permutation null for mean-diff directions.
    #[arg(long)]
    pos: Vec<PathBuf>,
    #[arg(long)]
    neg: Vec<PathBuf>,
    /// Label permutations of the permutation null.
    #[arg(long, default_value_t = 200)]
    permutations: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: CompareArgs) -> Result<()> {
    let mut files = Vec::new();
    for f in &a.files {
        let mut d = Directions::read(f, None)?;
        if !a.layers.is_empty() {
            d.layers.retain(|l, _| a.layers.contains(l));
            if d.layers.is_empty() {
                bail!(
                    "{}: none of --layers {:?} is in the file",
                    f.display(),
                    a.layers
                );
            }
        }
        if let Some((g, first)) = files
            .first()
            .map(|(g, d): &(PathBuf, Directions)| (g, d.d_model()))
            && d.d_model() != first
        {
            bail!(
                "{}: d_model {} differs from {}'s {first}",
                f.display(),
                d.d_model(),
                g.display()
            );
        }
        files.push((f.clone(), d));
    }
    if a.pos.len() != a.neg.len() || (!a.pos.is_empty() && a.pos.len() != files.len()) {
        bail!("--pos/--neg: give one --pos and one --neg per direction file, in file order");
    }
    let _lock = crate::report::lock_output("--out", &a.out, &[])?;
    let name = |p: &PathBuf| {
        p.file_stem().map_or(p.display().to_string(), |s| {
            s.to_string_lossy().into_owned()
        })
    };
    let mut pairs = Vec::new();
    let mut csv = String::from("file_a,file_b,layer,cos,p_random,perm_p,perm_null_mean_abs\n");
    let mut series = Vec::new();
    for i in 0..files.len() {
        for j in i + 1..files.len() {
            let (fa, da) = &files[i];
            let (fb, db) = &files[j];
            let cmp = compare_pair(da, db, a.threshold);
            if cmp.layers.is_empty() {
                bail!("{} and {}: no layer in common", fa.display(), fb.display());
            }
            let perms = if a.pos.is_empty() {
                Vec::new()
            } else {
                permutation_nulls(
                    &a,
                    i,
                    j,
                    da,
                    &cmp.layers.iter().map(|c| c.layer).collect::<Vec<_>>(),
                )?
            };
            for (k, c) in cmp.layers.iter().enumerate() {
                let (pp, pm) = perms.get(k).map_or(
                    (String::new(), String::new()),
                    |p: &lantern_search::PermutationNull| {
                        (p.p.to_string(), p.null_mean_abs.to_string())
                    },
                );
                csv += &format!(
                    "{},{},{},{},{},{pp},{pm}\n",
                    name(fa),
                    name(fb),
                    c.layer,
                    c.cos,
                    c.p_random
                );
            }
            println!(
                "{} vs {}: {} of {} layers with cos > {} (random directions: E|cos| = {:.4}, sd {:.4})",
                name(fa),
                name(fb),
                cmp.above,
                cmp.layers.len(),
                a.threshold,
                cmp.random_mean_abs,
                cmp.random_sd
            );
            for c in &cmp.layers {
                println!(
                    "  layer {:>3}  cos {:+.4}  p_random {:.3e}",
                    c.layer, c.cos, c.p_random
                );
            }
            series.push(Series {
                name: format!("{} vs {}", name(fa), name(fb)),
                points: cmp.layers.iter().map(|c| (c.layer as f64, c.cos)).collect(),
            });
            pairs.push(json!({
                "a": fa, "b": fb, "comparison": cmp, "permutation_null": perms,
            }));
        }
    }
    let mut plots = Vec::new();
    let mut within = Vec::new();
    for (f, d) in &files {
        let (layers, m) = layer_matrix(d);
        let labels: Vec<String> = layers.iter().map(|l| l.to_string()).collect();
        let png = a.out.join(format!("layers-{}.png", name(f)));
        lantern_plot::heatmap(
            &png,
            &format!("{}: cosine between layers", name(f)),
            &m,
            layers.len(),
            layers.len(),
            &labels,
            &labels,
        )?;
        plots.push(png);
        within.push(json!({"file": f, "layers": layers, "cosine": m}));
    }
    if !series.is_empty() {
        let png = a.out.join("compare.png");
        lantern_plot::line_chart(
            &png,
            &LineChart {
                title: "cosine per layer",
                x_label: "layer",
                y_label: "cos",
                log_y: false,
                series: &series,
            },
        )?;
        plots.push(png);
        if files.len() > 2 {
            // Mean cosine over layers for every pair of files.
            let n = files.len();
            let mut m = vec![1.0; n * n];
            for i in 0..n {
                for j in 0..n {
                    if i != j {
                        let c = compare_pair(&files[i].1, &files[j].1, a.threshold);
                        m[i * n + j] = c.layers.iter().map(|l| l.cos).sum::<f64>()
                            / c.layers.len().max(1) as f64;
                    }
                }
            }
            let labels: Vec<String> = files.iter().map(|(f, _)| name(f)).collect();
            let png = a.out.join("pairs.png");
            lantern_plot::heatmap(
                &png,
                "mean cosine over common layers",
                &m,
                n,
                n,
                &labels,
                &labels,
            )?;
            plots.push(png);
        }
    }
    write_json(
        &a.out.join("compare.json"),
        &json!({"threshold": a.threshold, "pairs": pairs, "within": within}),
    )?;
    std::fs::write(a.out.join("compare.csv"), csv)?;
    println!(
        "wrote {} and {} plots",
        a.out.join("compare.json").display(),
        plots.len()
    );
    Ok(())
}

/// The permutation null at each common layer of pair (i, j), from the stores behind the files.
fn permutation_nulls(
    a: &CompareArgs,
    i: usize,
    j: usize,
    da: &Directions,
    layers: &[usize],
) -> Result<Vec<lantern_search::PermutationNull>> {
    let tokens: TokenSelection = if da.meta.tokens.is_empty() {
        TokenSelection::ALL
    } else {
        da.meta.tokens.parse().map_err(search_flag_error)?
    };
    let site = Some(da.meta.hook.as_str());
    let load = |p: &PathBuf| layer_stores(p, site);
    let (pi, ni, pj, nj) = (
        load(&a.pos[i])?,
        load(&a.neg[i])?,
        load(&a.pos[j])?,
        load(&a.neg[j])?,
    );
    let mut out = Vec::new();
    for &l in layers {
        let at = |s: &[lantern_search::LayerStore], p: &PathBuf| -> Result<SeqMeans> {
            let st = s
                .iter()
                .find(|s| layer_of(s.hook) == l)
                .with_context(|| format!("{}: no store at layer {l}", p.display()))?;
            Ok(SeqMeans::collect(&st.store, None, tokens)?)
        };
        let (a0, a1, b0, b1) = (
            at(&pi, &a.pos[i])?,
            at(&ni, &a.neg[i])?,
            at(&pj, &a.pos[j])?,
            at(&nj, &a.neg[j])?,
        );
        out.push(permutation_null(
            (&a0, &a1),
            (&b0, &b1),
            a.permutations,
            a.seed ^ l as u64,
        ));
    }
    Ok(out)
}
