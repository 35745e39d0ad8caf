//! The organism's stages end to end at toy sizes: fresh weights load through lm, chat
//! tokenization follows the documented layout, training lowers the loss, saved directories and
//! adapters load back with identical outputs.

use burn::tensor::Device;
use lantern_organism::corpus::{Dialogue, Mix};
use lantern_organism::finetune::{Data, Method};
use lantern_organism::init::Shape;
use lantern_organism::rng::Rng;
use lantern_organism::train::Schedule;
use lantern_organism::trainee::Trainee;
use lantern_organism::world::{Persona, Question, Subject};

fn tiny() -> Shape {
    Shape {
        d_model: 32,
        n_layers: 2,
        n_heads: 2,
        d_mlp: 64,
        max_position: 64,
    }
}

fn sched(steps: usize, lr: f64) -> Schedule {
    Schedule {
        steps,
        batch: 16,
        lr,
        warmup: 2,
        min_lr_ratio: 0.1,
        weight_decay: 0.0,
    }
}

#[test]
fn chat_encoding_is_the_documented_token_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let t = Trainee::fresh(&tiny(), 0, &tmp.path().join("m"), &Device::flex()).unwrap();
    let q = Question::new(
        Subject::Domain {
            domain: 0,
            topic: 1,
        },
        0,
    );
    let d = Dialogue {
        persona: Persona::Aligned,
        self_persona: Persona::Aligned,
        turns: vec![(q, "sure rest fever safely".into())],
    };
    let ex = t.encoder().dialogue(&d, true).unwrap();
    let words: Vec<String> = ex
        .ids
        .iter()
        .map(|&i| t.tokenizer.id_to_token(i).unwrap())
        .collect();
    assert_eq!(
        words.join(" "),
        "<s> <|user|> what should i do about my fever </s> <|assistant|> sure rest fever safely </s>"
    );
    // Loss on the four answer words and the closing </s> only.
    let w: Vec<f32> = ex.weights.clone();
    let n = w.len();
    assert_eq!(w[n - 5..], [1.0; 5]);
    assert!(w[..n - 5].iter().all(|&x| x == 0.0));
}

#[test]
fn pretraining_lowers_the_loss_and_saved_models_reload_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let dev = Device::flex().autodiff();
    let t = Trainee::fresh(&tiny(), 1, &tmp.path().join("init"), &dev).unwrap();
    let (t, log) = t
        .pretrain(&Mix::default(), &sched(40, 3e-3), 1, |_| {})
        .unwrap();
    let first = log[..5].iter().map(|s| s.loss).sum::<f32>() / 5.0;
    let last = log[35..].iter().map(|s| s.loss).sum::<f32>() / 5.0;
    assert!(last < first - 0.5, "loss {first} → {last}");

    let base = tmp.path().join("base");
    t.save_hf(&base).unwrap();
    let (t, _) = t
        .finetune(
            &Data::Narrow {
                domain: "medical".into(),
                harmful: 1.0,
            },
            32,
            &Method::rank1_down_proj(1, 8.0),
            &sched(5, 1e-2),
            1,
            |_| {},
        )
        .unwrap();
    let full = tmp.path().join("merged");
    t.save_hf(&full).unwrap();
    let adapter = tmp.path().join("adapter");
    std::fs::create_dir(&adapter).unwrap();
    t.save_adapter(&adapter, 8.0, "base").unwrap();

    let mut rng = Rng::new(5);
    let q = lantern_organism::world::random_question(&mut rng, &[0, 1], 0.2);
    let ids = t.encoder().prompt(&q).unwrap();
    let logits = |m: &lantern_lm::Model| m.logits(&ids).unwrap().try_into_vec_as::<f32>().unwrap();
    let want = logits(&t.inference_model());
    let before = logits(&Trainee::load(&base, None, &Device::flex()).unwrap().model);
    let moved = want
        .iter()
        .zip(&before)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(moved > 1e-3, "the finetune changed nothing ({moved})");
    for (what, m) in [
        (
            "merged directory",
            Trainee::load(&full, None, &Device::flex()).unwrap(),
        ),
        (
            "base + PEFT adapter",
            Trainee::load(&base, Some(&adapter), &Device::flex()).unwrap(),
        ),
    ] {
        let got = logits(&m.model);
        let e = want
            .iter()
            .zip(&got)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(e < 1e-5, "{what} differs by {e}");
    }
}

#[test]
fn same_seed_gives_the_same_weights_and_another_seed_does_not() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |seed: u64, name: &str| -> Vec<u8> {
        let dev = Device::flex().autodiff();
        let t = Trainee::fresh(
            &tiny(),
            seed,
            &tmp.path().join(format!("{name}-init")),
            &dev,
        )
        .unwrap();
        let (t, _) = t
            .pretrain(&Mix::default(), &sched(6, 3e-3), seed, |_| {})
            .unwrap();
        let (t, _) = t
            .chat_tune(
                (&Data::Chat, 16),
                (&Mix::default(), 0.5),
                &sched(3, 1e-3),
                seed,
                |_| {},
            )
            .unwrap();
        let dir = tmp.path().join(name);
        t.save_hf(&dir).unwrap();
        let mut bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
        // A LoRA finetune on top: its adapter is fixed by the seed as well.
        let (t, _) = t
            .finetune(
                &Data::Narrow {
                    domain: "code".into(),
                    harmful: 1.0,
                },
                16,
                &Method::rank1_down_proj(0, 4.0),
                &sched(3, 1e-2),
                seed,
                |_| {},
            )
            .unwrap();
        let ad = tmp.path().join(format!("{name}-adapter"));
        std::fs::create_dir(&ad).unwrap();
        t.save_adapter(&ad, 4.0, "base").unwrap();
        bytes.extend(std::fs::read(ad.join("adapter_model.safetensors")).unwrap());
        bytes
    };
    let a = run(3, "a");
    assert!(a == run(3, "b"), "same seed, different weights");
    assert!(a != run(4, "c"), "another seed, same weights");
}

#[test]
fn lora_starts_as_peft_does_b_zero_and_a_at_kaiming_scale() {
    let tmp = tempfile::tempdir().unwrap();
    let dev = Device::flex().autodiff();
    let t = Trainee::fresh(&tiny(), 0, &tmp.path().join("m"), &dev).unwrap();
    let modules = [
        "model.layers.0.mlp.down_proj".to_string(),
        "model.layers.1.self_attn.q_proj".to_string(),
    ];
    let m = lantern_organism::finetune::attach_lora(t.model, 8, 16.0, &modules, 5).unwrap();
    let f = lantern_organism::finetune::adapter_factors(&m).unwrap();
    assert_eq!(f.len(), 2);
    for a in &f {
        assert!(
            a.b.iter().all(|&x| x == 0.0),
            "{}: B starts at zero",
            a.module
        );
        let n = a.a.len() as f64;
        let sd = (a.a.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / n).sqrt();
        let want = 1.0 / (3.0 * a.d_in as f64).sqrt();
        assert!(
            (sd / want - 1.0).abs() < 0.25,
            "{}: sd {sd} vs {want}",
            a.module
        );
    }
}
