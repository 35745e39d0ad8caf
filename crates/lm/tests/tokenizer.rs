//! Tokenizer tests against independent references: ids from llama.cpp and Hugging Face
//! transformers for the real SmolLM2 GGUF (`fixtures/smollm2_tokens.json`), and from the Python
//! `tokenizers` library for a small trained BPE (`fixtures/tiny_bpe/`). Both fixtures are made
//! by `fixtures/make_tokenizer_fixtures.py`.

mod text_support;

use lantern_lm::LmError;
use lantern_lm::tokenizer::{GgufVocab, Tokenizer};
use serde_json::Value;
use text_support::ids;

#[test]
fn smollm2_gguf_ids_match_llama_cpp_and_transformers() {
    let Some((tokenizer, _)) = text_support::smollm2() else {
        return;
    };
    let fixture = text_support::smollm2_fixture();
    let mut compared_with_llama_cpp = 0;
    for entry in fixture["texts"].as_array().unwrap() {
        let text = entry["text"].as_str().unwrap();
        let ours = tokenizer.encode(text, false).unwrap();
        let transformers = ids(&entry["transformers_ids"]);
        match entry.get("llama_cpp_ids") {
            Some(llama) => {
                compared_with_llama_cpp += 1;
                assert_eq!(ours, ids(llama), "llama.cpp ids of {text:?}");
                if ids(llama) != transformers {
                    eprintln!("note: transformers differs from llama.cpp on {text:?}");
                } else {
                    assert_eq!(ours, transformers, "transformers ids of {text:?}");
                }
            }
            None => assert_eq!(ours, transformers, "transformers ids of {text:?}"),
        }
    }
    if compared_with_llama_cpp == 0 {
        eprintln!("note: the fixture has no llama.cpp ids (llama-cpp-python was not installed)");
    }
}

#[test]
fn smollm2_decode_round_trips_and_matches_references() {
    let Some((tokenizer, _)) = text_support::smollm2() else {
        return;
    };
    let fixture = text_support::smollm2_fixture();
    for entry in fixture["texts"].as_array().unwrap() {
        let text = entry["text"].as_str().unwrap();
        let encoded = tokenizer.encode(text, false).unwrap();
        assert_eq!(tokenizer.decode(&encoded, false).unwrap(), text);
        let transformers = ids(&entry["transformers_ids"]);
        assert_eq!(
            tokenizer.decode(&transformers, false).unwrap(),
            entry["decoded"].as_str().unwrap(),
            "decode of transformers' ids of {text:?}"
        );
        if let Some(decoded) = entry.get("llama_cpp_decoded") {
            assert_eq!(
                tokenizer.decode(&encoded, false).unwrap(),
                decoded.as_str().unwrap()
            );
        }
    }
    let ids = tokenizer
        .encode("<|im_start|>user\nHi<|im_end|>", false)
        .unwrap();
    assert_eq!(tokenizer.decode(&ids, true).unwrap(), "user\nHi");
}

#[test]
fn smollm2_special_ids_follow_the_metadata() {
    let Some((tokenizer, _)) = text_support::smollm2() else {
        return;
    };
    let fixture = text_support::smollm2_fixture();
    assert_eq!(
        tokenizer.vocab_size(),
        fixture["vocab_size"].as_u64().unwrap() as usize
    );
    assert_eq!(tokenizer.bos_id(), Some(1));
    assert_eq!(tokenizer.token_to_id("<|im_start|>"), Some(1));
    // Declared EOS `<|im_end|>`, then `<|endoftext|>`, also an end-of-generation token.
    assert_eq!(tokenizer.eos_ids(), &[2, 0]);
    assert_eq!(tokenizer.pad_id(), Some(2));
    assert_eq!(tokenizer.unk_id(), Some(0));
    assert_eq!(tokenizer.id_to_token(2).as_deref(), Some("<|im_end|>"));
    assert!(tokenizer.is_special(2) && !tokenizer.is_special(19556));
    // add_bos_token is false for SmolLM2: add_special changes nothing.
    assert_eq!(
        tokenizer.encode("Hi", true).unwrap(),
        tokenizer.encode("Hi", false).unwrap()
    );
}

#[test]
fn stream_decoder_emits_text_once_characters_are_complete() {
    let Some((tokenizer, _)) = text_support::smollm2() else {
        return;
    };
    let text = "café naïve 日本語 🙂 done";
    let ids = tokenizer.encode(text, false).unwrap();
    let mut stream = tokenizer.stream_decoder(false);
    let mut out = String::new();
    let mut waited = 0;
    for &id in &ids {
        match stream.push(id).unwrap() {
            Some(piece) => out.push_str(&piece),
            None => waited += 1,
        }
    }
    assert_eq!(out, text);
    assert!(
        waited > 0,
        "some token of {ids:?} should end inside a character"
    );
}

#[test]
fn offsets_are_byte_ranges_of_the_input() {
    let Some((tokenizer, _)) = text_support::smollm2() else {
        return;
    };
    let text = "Hi café <|im_end|>\n日本";
    let (ids, offsets) = tokenizer.encode_with_offsets(text, false).unwrap();
    assert_eq!(ids.len(), offsets.len());
    assert_eq!(offsets.first().unwrap().start, 0);
    assert_eq!(offsets.last().unwrap().end, text.len());
    let special = ids.iter().position(|&id| id == 2).unwrap();
    assert_eq!(&text[offsets[special].clone()], "<|im_end|>");
    for pair in offsets.windows(2) {
        assert!(
            pair[0].end <= pair[1].start || pair[0] == pair[1],
            "{offsets:?}"
        );
    }
}

fn tiny_reference() -> Value {
    text_support::json_fixture("tiny_bpe/reference.json")
}

#[test]
fn tokenizer_json_matches_python_tokenizers() {
    let tokenizer = Tokenizer::from_file(text_support::fixture("tiny_bpe/tokenizer.json")).unwrap();
    let reference = tiny_reference();
    assert_eq!(
        tokenizer.vocab_size(),
        reference["vocab_size"].as_u64().unwrap() as usize
    );
    assert_eq!(
        tokenizer.bos_id(),
        reference["bos_id"].as_u64().map(|v| v as u32)
    );
    // The declared `</s>`, then the special end-of-generation tokens it has, in llama.cpp's order.
    let id = |t: &str| tokenizer.token_to_id(t).unwrap();
    assert_eq!(
        tokenizer.eos_ids(),
        &[id("</s>"), id("<|im_end|>"), id("<|endoftext|>")]
    );
    assert_eq!(tokenizer.pad_id(), tokenizer.token_to_id("<|endoftext|>"));
    for entry in reference["texts"].as_array().unwrap() {
        let text = entry["text"].as_str().unwrap();
        let plain = tokenizer.encode(text, false).unwrap();
        assert_eq!(plain, ids(&entry["ids"]), "{text:?}");
        assert_eq!(
            tokenizer.encode(text, true).unwrap(),
            ids(&entry["ids_with_special"])
        );
        assert_eq!(
            tokenizer.decode(&plain, false).unwrap(),
            entry["decoded"].as_str().unwrap()
        );
        assert_eq!(
            tokenizer.decode(&plain, true).unwrap(),
            entry["decoded_skip_special"].as_str().unwrap()
        );
    }
}

/// The tiny BPE's vocabulary and merges as GGUF metadata would hold them.
fn tiny_as_gguf(add_bos: Option<bool>) -> GgufVocab {
    let json = text_support::json_fixture("tiny_bpe/tokenizer.json");
    let vocab = json["model"]["vocab"].as_object().unwrap();
    let mut tokens = vec![String::new(); vocab.len()];
    for (token, id) in vocab {
        tokens[id.as_u64().unwrap() as usize] = token.clone();
    }
    let merges = json["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match m {
            Value::String(s) => s.clone(),
            Value::Array(pair) => format!(
                "{} {}",
                pair[0].as_str().unwrap(),
                pair[1].as_str().unwrap()
            ),
            other => panic!("merge {other}"),
        })
        .collect();
    let specials = ["<|endoftext|>", "<s>", "</s>", "<|im_end|>"];
    let token_types = tokens
        .iter()
        .map(|t| if specials.contains(&t.as_str()) { 3 } else { 1 })
        .collect();
    let id = |t: &str| tokens.iter().position(|x| x == t).map(|i| i as u32);
    GgufVocab {
        model: "gpt2".into(),
        pre: Some("gpt-2".into()),
        bos: id("<s>"),
        eos: id("</s>"),
        pad: id("<|endoftext|>"),
        unk: None,
        add_bos,
        add_eos: None,
        tokens,
        merges,
        token_types,
    }
}

#[test]
fn gguf_vocab_rebuilds_the_same_tokenizer_as_its_tokenizer_json() {
    let tokenizer = Tokenizer::from_gguf_metadata("tiny.gguf", &tiny_as_gguf(Some(true))).unwrap();
    for entry in tiny_reference()["texts"].as_array().unwrap() {
        let text = entry["text"].as_str().unwrap();
        assert_eq!(
            tokenizer.encode(text, false).unwrap(),
            ids(&entry["ids"]),
            "{text:?}"
        );
        assert_eq!(
            tokenizer.encode(text, true).unwrap(),
            ids(&entry["ids_with_special"])
        );
    }
    let (with_bos, offsets) = tokenizer.encode_with_offsets("cat", true).unwrap();
    assert_eq!(
        (with_bos[0], offsets[0].clone()),
        (tokenizer.bos_id().unwrap(), 0..0)
    );
    // No add_bos key: llama.cpp's default for a GPT-2 pre-tokenizer is no BOS.
    let plain = Tokenizer::from_gguf_metadata("tiny.gguf", &tiny_as_gguf(None)).unwrap();
    assert_eq!(
        plain.encode("cat", true).unwrap(),
        plain.encode("cat", false).unwrap()
    );
}

#[test]
fn bad_inputs_are_one_line_errors_naming_the_file() {
    let missing = Tokenizer::from_file("/nonexistent/tokenizer.json").unwrap_err();
    assert!(matches!(missing, LmError::Io { .. }), "{missing}");

    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("tokenizer.json");
    std::fs::write(&garbage, "{ not json").unwrap();
    let err = Tokenizer::from_file(&garbage).unwrap_err();
    assert!(matches!(err, LmError::Format { .. }) && err.to_string().contains("tokenizer.json"));

    let cases: Vec<(GgufVocab, &str)> = vec![
        (
            GgufVocab {
                model: "llama".into(),
                ..tiny_as_gguf(None)
            },
            "tokenizer.ggml.model 'llama'",
        ),
        (
            GgufVocab {
                pre: Some("nonesuch".into()),
                ..tiny_as_gguf(None)
            },
            "tokenizer.ggml.pre 'nonesuch'",
        ),
        (
            GgufVocab {
                merges: vec!["ab".into()],
                ..tiny_as_gguf(None)
            },
            "merges[0]",
        ),
        (
            GgufVocab {
                merges: vec!["zz qq".into()],
                ..tiny_as_gguf(None)
            },
            "merges",
        ),
        (
            GgufVocab {
                bos: Some(1 << 20),
                ..tiny_as_gguf(None)
            },
            "bos_token_id",
        ),
        (
            GgufVocab {
                token_types: vec![1],
                ..tiny_as_gguf(None)
            },
            "token_type",
        ),
        (
            GgufVocab {
                bos: None,
                ..tiny_as_gguf(Some(true))
            },
            "add_bos_token",
        ),
        (
            GgufVocab {
                tokens: vec![],
                ..tiny_as_gguf(None)
            },
            "tokens is empty",
        ),
    ];
    for (vocab, expected) in cases {
        let err = Tokenizer::from_gguf_metadata("bad.gguf", &vocab)
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.gguf") && err.contains(expected), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    // Files the tokenizers library itself would panic on (found by fuzzing, issue 15): a syntax
    // error inside "decoder", and a template naming a special token it does not define.
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/tiny_bpe/tokenizer.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let text = fixture.to_string();
    let cut = text.find("\"decoder\"").expect("the fixture has a decoder") + 12;
    std::fs::write(&garbage, &text[..cut]).unwrap();
    let err = Tokenizer::from_file(&garbage).unwrap_err().to_string();
    assert!(
        err.contains("not valid JSON") && !err.contains('\n'),
        "{err}"
    );
    let mut undefined = fixture.clone();
    undefined["post_processor"] = serde_json::json!({
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<t>": {"id": "<t>", "ids": [0], "tokens": ["<t>"]}},
    });
    std::fs::write(&garbage, undefined.to_string()).unwrap();
    let err = Tokenizer::from_file(&garbage).unwrap_err().to_string();
    assert!(
        err.contains("post_processor") && err.contains("\"<s>\""),
        "{err}"
    );

    let tokenizer = Tokenizer::from_gguf_metadata("tiny.gguf", &tiny_as_gguf(None)).unwrap();
    let err = tokenizer.decode(&[1 << 30], false).unwrap_err().to_string();
    assert!(
        err.contains("tiny.gguf") && err.contains("1073741824"),
        "{err}"
    );
    assert!(tokenizer.stream_decoder(false).push(1 << 30).is_err());
}

#[test]
fn a_long_text_is_cut_to_its_first_tokens_as_whole_tokenization_would_cut_it() {
    let tokenizer = Tokenizer::from_file(text_support::fixture("tiny_bpe/tokenizer.json")).unwrap();
    let reference = tiny_reference();
    // ~2 MB of the fixture's texts, repeated, with a multi-byte character at every cut point
    // candidate so the byte cut must land on a character boundary.
    let pieces: Vec<&str> = reference["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    let mut text = String::new();
    while text.len() < 2_000_000 {
        for p in &pieces {
            text.push_str(p);
            text.push_str(" é ");
        }
    }
    for max in [1, 50, 3000] {
        let mut whole = tokenizer.encode(&text, true).unwrap();
        whole.truncate(max);
        assert_eq!(
            tokenizer.encode_prefix(&text, true, max).unwrap(),
            whole,
            "{max}"
        );
    }
    // Short texts take the plain path.
    assert_eq!(
        tokenizer.encode_prefix(pieces[0], false, 1000).unwrap(),
        tokenizer.encode(pieces[0], false).unwrap()
    );
}
