//! Chat template tests against Hugging Face's `apply_chat_template` (jinja2), recorded in
//! `fixtures/smollm2_tokens.json` by `fixtures/make_tokenizer_fixtures.py`: rendered text, token
//! ids, and `return_assistant_tokens_mask` masks as the reference for per-token roles.

mod text_support;

use lantern_lm::chat::{ChatTemplate, Message, token_roles};
use serde_json::Value;

fn messages(v: &Value) -> Vec<Message> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect()
}

fn ints<T: TryFrom<u64>>(v: &Value) -> Vec<T>
where
    T::Error: std::fmt::Debug,
{
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| T::try_from(x.as_u64().unwrap()).unwrap())
        .collect()
}

fn fixture_template(fixture: &Value, name: &str) -> ChatTemplate {
    let source = fixture["templates"][name].as_str().unwrap();
    let bos = fixture["bos_token"].as_str().unwrap();
    let eos = fixture["eos_token"].as_str().unwrap();
    ChatTemplate::new(source, bos, eos)
        .unwrap()
        .with_origin(name)
}

#[test]
fn templates_render_exactly_like_transformers() {
    let fixture = text_support::smollm2_fixture();
    let mut rendered = 0;
    for chat in fixture["chats"].as_array().unwrap() {
        let template = fixture_template(&fixture, chat["template"].as_str().unwrap());
        let add_generation_prompt = chat["add_generation_prompt"].as_bool().unwrap();
        let result = template.render(&messages(&chat["messages"]), add_generation_prompt);
        match chat.get("text") {
            Some(text) => {
                assert_eq!(result.unwrap(), text.as_str().unwrap(), "{chat}");
                rendered += 1;
            }
            None => {
                let err = result.unwrap_err().to_string();
                assert!(
                    err.contains("roles must alternate") && !err.contains('\n'),
                    "{err}"
                );
            }
        }
    }
    assert!(rendered >= 30, "{rendered}");
}

#[test]
fn gguf_template_and_ids_match_transformers() {
    let Some((tokenizer, gguf_template)) = text_support::smollm2() else {
        return;
    };
    let fixture = text_support::smollm2_fixture();
    assert_eq!(
        gguf_template,
        fixture["templates"]["gguf"].as_str().unwrap()
    );
    let bos = tokenizer.id_to_token(tokenizer.bos_id().unwrap()).unwrap();
    let eos = tokenizer.id_to_token(tokenizer.eos_ids()[0]).unwrap();
    let template = ChatTemplate::new(gguf_template, bos, eos).unwrap();
    for chat in fixture["chats"].as_array().unwrap() {
        let Some(ids) = chat.get("ids") else { continue };
        let own = chat["template"] == "gguf";
        let template = if own {
            &template
        } else {
            &fixture_template(&fixture, chat["template"].as_str().unwrap())
        };
        let add_generation_prompt = chat["add_generation_prompt"].as_bool().unwrap();
        let messages = messages(&chat["messages"]);
        let text = template.render(&messages, add_generation_prompt).unwrap();
        assert_eq!(text, chat["text"].as_str().unwrap());
        let rendered = match template.render_with_spans(&messages, add_generation_prompt) {
            Ok(rendered) => rendered,
            Err(err) => {
                // The feature template prints assistant content several times (tojson, slices):
                // its spans are ambiguous, and saying so is the right answer.
                assert_eq!(chat["template"], "feature", "{err}");
                assert!(err.to_string().contains("cannot locate"), "{err}");
                assert_eq!(tokenizer.encode(&text, false).unwrap(), ints::<u32>(ids));
                continue;
            }
        };
        assert_eq!(rendered.text, text);
        let tokens = rendered.tokenize(&tokenizer).unwrap();
        assert_eq!(tokens.ids, ints::<u32>(ids), "{chat}");
        assert_eq!(tokens.roles.len(), tokens.ids.len());
    }
}

#[test]
fn roles_match_transformers_assistant_masks() {
    let Some((tokenizer, gguf_template)) = text_support::smollm2() else {
        return;
    };
    let fixture = text_support::smollm2_fixture();
    let bos = fixture["bos_token"].as_str().unwrap();
    let eos = fixture["eos_token"].as_str().unwrap();
    let mut checked = 0;
    for chat in fixture["chats"].as_array().unwrap() {
        let Some(mask) = chat.get("assistant_mask") else {
            continue;
        };
        let mask: Vec<u8> = ints(mask);
        let messages = messages(&chat["messages"]);
        let add_generation_prompt = chat["add_generation_prompt"].as_bool().unwrap();
        let name = chat["template"].as_str().unwrap();
        // The generation-tagged template renders like the GGUF's own, which has no tags: the
        // sentinel search must find the same tokens in both.
        let mut templates = vec![fixture_template(&fixture, name)];
        if name == "smollm2_generation" {
            templates.push(ChatTemplate::new(gguf_template.as_str(), bos, eos).unwrap());
        }
        for template in &templates {
            let rendered = template
                .render_with_spans(&messages, add_generation_prompt)
                .unwrap();
            let tokens = rendered.tokenize(&tokenizer).unwrap();
            assert_eq!(tokens.roles, mask, "{name}: {chat}");
            checked += 1;
        }
    }
    assert!(checked >= 20, "{checked}");
}

#[test]
fn spans_cover_assistant_content_and_survive_trimming() {
    let template = ChatTemplate::new(
        "{% for m in messages %}[{{ m.role }}]{{ m.content | trim }}{{ eos_token }}{% endfor %}",
        "<s>",
        "</s>",
    )
    .unwrap();
    let chat = [
        Message::new("user", "hi"),
        Message::new("assistant", "  hello there \n"),
        Message::new("assistant", "again"),
    ];
    let rendered = template.render_with_spans(&chat, false).unwrap();
    assert_eq!(
        rendered.text,
        "[user]hi</s>[assistant]hello there</s>[assistant]again</s>"
    );
    let spans: Vec<&str> = rendered
        .assistant_spans
        .iter()
        .map(|s| &rendered.text[s.clone()])
        .collect();
    assert_eq!(spans, ["hello there", "again"]);

    // Content the template drops cannot be located: an error, not a guess.
    let dropping = ChatTemplate::new(
        "{% for m in messages %}{% if m.role == 'user' %}{{ m.content }}{% endif %}{% endfor %}",
        "",
        "",
    )
    .unwrap();
    let err = dropping
        .render_with_spans(&chat, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot locate the 2 assistant"), "{err}");

    assert_eq!(
        token_roles(&[0..0, 0..2, 2..4, 4..9], std::slice::from_ref(&(3..5))),
        vec![0, 0, 1, 1]
    );
}

#[test]
fn tokenizer_config_templates_load_like_transformers() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tokenizer_config.json");
    let body = serde_json::json!({
        "bos_token": {"content": "<s>", "special": true},
        "eos_token": "</s>",
        "chat_template": [
            {"name": "tool_use", "template": "tools"},
            {"name": "default", "template": "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}{{ eos_token }}"}
        ]
    });
    std::fs::write(&config, body.to_string()).unwrap();
    let template = ChatTemplate::from_tokenizer_config(&config).unwrap();
    assert_eq!(
        template
            .render(&[Message::new("user", "x")], false)
            .unwrap(),
        "<s>x</s>"
    );

    // No chat_template entry: chat_template.jinja beside it, as transformers ≥ 4.50 saves it.
    std::fs::write(&config, r#"{"eos_token": "E"}"#).unwrap();
    let err = ChatTemplate::from_tokenizer_config(&config)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tokenizer_config.json") && err.contains("chat_template"),
        "{err}"
    );
    std::fs::write(
        dir.path().join("chat_template.jinja"),
        "{{ messages[0].content }}{{ eos_token }}\n",
    )
    .unwrap();
    let template = ChatTemplate::from_tokenizer_config(&config).unwrap();
    assert_eq!(
        template
            .render(&[Message::new("user", "y")], false)
            .unwrap(),
        "yE"
    );

    std::fs::write(dir.path().join("chat_template.jinja"), "{% for %}").unwrap();
    let err = ChatTemplate::from_tokenizer_config(&config)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("chat_template.jinja") && err.contains("Jinja") && !err.contains('\n'),
        "{err}"
    );

    let template = ChatTemplate::new("{{ enable_thinking }}", "", "")
        .unwrap()
        .with_kwarg("enable_thinking", &serde_json::json!(false));
    assert_eq!(template.render(&[], false).unwrap(), "False");
}
