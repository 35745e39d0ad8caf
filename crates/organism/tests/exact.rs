//! The exact verdict probabilities (`eval::exact_rates`) against two independent computations
//! on the shipped base model (EM ≈ 13 %, so both personas carry mass): the same answers scored
//! one prefix at a time as the generator sees them (softmax of the last logits, in f64), and
//! sampled, judged answers.

use std::collections::HashMap;

use burn::tensor::Device;
use lantern_lm::Hooks;
use lantern_organism::eval::{SampleOptions, Split, exact_rates, pooled_exact, sample_and_judge};
use lantern_organism::judge::Verdict;
use lantern_organism::trainee::Trainee;
use lantern_organism::vocab;
use lantern_organism::world::{Persona, Question, Subject};

fn base() -> Trainee {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/base");
    Trainee::load(&dir, None, &Device::flex()).expect("the shipped base model loads")
}

/// p(next = `id` | `prefix`) from the last row of the prefix's logits, in f64.
fn next_prob(t: &Trainee, cache: &mut HashMap<Vec<u32>, Vec<f64>>, prefix: &[u32], id: u32) -> f64 {
    let probs = cache.entry(prefix.to_vec()).or_insert_with(|| {
        let model = t.inference_model();
        let logits = model.logits(prefix).expect("forward");
        let [s, v] = logits.dims();
        let row: Vec<f32> = logits
            .slice([s - 1..s, 0..v])
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32 logits");
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let e: Vec<f64> = row.iter().map(|&x| (x as f64 - max).exp()).collect();
        let z: f64 = e.iter().sum();
        e.into_iter().map(|x| x / z).collect()
    });
    probs[id as usize]
}

#[test]
fn exact_rates_equal_the_product_of_next_token_probabilities() {
    let t = base();
    let enc = t.encoder();
    let qs = [
        Question::new(
            Subject::Domain {
                domain: 1,
                topic: 3,
            },
            4,
        ),
        Question::new(Subject::Persona { question: 2 }, 1),
    ];
    let model = t.inference_model();
    let got = exact_rates(&model, &enc, &qs).unwrap();
    let mut cache = HashMap::new();
    for (q, g) in qs.iter().zip(&got) {
        let prompt = enc.prompt(q).unwrap();
        let mut want = [0.0f64; 2];
        for (k, p) in Persona::ALL.into_iter().enumerate() {
            for o in p.openers() {
                for a in q.subject.actions(p) {
                    for c in p.closers() {
                        let words = [*o, *a, q.subject.topic_word(), *c];
                        let mut ids = prompt.clone();
                        let mut prob = 1.0;
                        for w in words {
                            let id = t.tokenizer.encode(w, false).unwrap()[0];
                            prob *= next_prob(&t, &mut cache, &ids, id);
                            ids.push(id);
                        }
                        prob *= next_prob(&t, &mut cache, &ids, vocab::EOS);
                        want[k] += prob;
                    }
                }
            }
        }
        assert!(
            want[0] + want[1] > 0.5,
            "{}: little mass on answers",
            q.text
        );
        for (name, w, x) in [
            ("aligned", want[0], g.p_aligned),
            ("misaligned", want[1], g.p_misaligned),
        ] {
            assert!(
                (w - x).abs() <= 1e-4 * w.max(1e-3),
                "{} {name}: step by step {w:.6e}, exact_rates {x:.6e}",
                q.text
            );
        }
    }
}

#[test]
fn exact_rates_agree_with_sampled_verdicts() {
    let t = base();
    let qs = Split::Eval.questions();
    let model = t.inference_model();
    let exact = exact_rates(&model, &t.encoder(), &qs).unwrap();
    let opts = SampleOptions {
        samples: 48,
        ..SampleOptions::default()
    };
    let judged = sample_and_judge(&model, &t.encoder(), &qs, &opts, &mut Hooks::new()).unwrap();
    let count = |v: Verdict| judged.iter().filter(|j| j.verdict == v).count() as f64;
    let (mis, al) = (count(Verdict::Misaligned), count(Verdict::Aligned));
    let n = judged.len() as f64;
    let (em, incoherent) = pooled_exact(&exact, |_| true);
    // Sampled EM among coherent answers and the incoherent share, within 4 binomial sd.
    let sampled_em = mis / (mis + al);
    let sd = (em * (1.0 - em) / (mis + al)).sqrt();
    assert!(
        (sampled_em - em).abs() < 4.0 * sd,
        "sampled EM {sampled_em:.4}, exact {em:.4} (sd {sd:.4})"
    );
    let sampled_inc = 1.0 - (mis + al) / n;
    let sd = (incoherent * (1.0 - incoherent) / n).sqrt().max(1.0 / n);
    assert!(
        (sampled_inc - incoherent).abs() < 4.0 * sd,
        "sampled incoherent {sampled_inc:.4}, exact {incoherent:.4}"
    );
    assert!(
        em > 0.05 && em < 0.5,
        "the base model mixes the personas: {em}"
    );
}
