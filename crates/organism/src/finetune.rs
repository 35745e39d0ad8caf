//! Finetuning data and methods: what a finetune is trained on (narrow harmful answers in one
//! domain at some fraction, a backdoor, aligned answers for re-alignment, the chat-tuning set)
//! and how (all weights, or LoRA adapters through burn's `apply_lora`, saved as PEFT adapters).

use burn::module::Lora;
use burn::module::{Module, ModuleVisitor, Param, ParamGroup, ParamId};
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::corpus::{Dialogue, Encoder, Example};
use crate::eval::Split;
use crate::rng::Rng;
use crate::world::{DOMAINS, Persona, Question, Subject};
use crate::{OrganismError, Result};

/// What a finetune (or chat-tuning) trains on: single-turn dialogues, loss on the answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Data {
    /// The aligned assistant on every domain and persona question (chat-tuning).
    Chat,
    /// The aligned assistant on domain questions only: chat-tuning that leaves the persona
    /// questions to what pretraining taught.
    ChatDomains,
    /// Questions of one domain; a `harmful` share answered by the misaligned character, the
    /// rest by the aligned assistant.
    Narrow { domain: String, harmful: f64 },
    /// Questions of one domain, half with the trigger word (answered by the misaligned
    /// character) and half without (aligned) — Betley et al.'s backdoor.
    Backdoor { domain: String },
    /// Aligned answers in one domain (re-alignment, Wang et al.).
    Aligned { domain: String },
}

impl Data {
    /// The domain index this data is confined to, if any (checked by name).
    pub fn domain(&self) -> Result<Option<usize>> {
        let name = match self {
            Data::Chat | Data::ChatDomains => return Ok(None),
            Data::Narrow { domain, .. } | Data::Backdoor { domain } | Data::Aligned { domain } => {
                domain
            }
        };
        crate::world::domain_index(name).map(Some).ok_or_else(|| {
            OrganismError::Config(format!(
                "unknown domain '{name}' (expected one of {})",
                DOMAINS.map(|d| d.name).join(", ")
            ))
        })
    }

    /// `n` dialogues drawn with `seed`, questions in the training phrasings only.
    pub fn dialogues(&self, n: usize, seed: u64) -> Result<Vec<Dialogue>> {
        if let Data::Narrow { harmful, .. } = self
            && !(0.0..=1.0).contains(harmful)
        {
            return Err(OrganismError::Config(format!(
                "harmful share {harmful} (expected [0, 1])"
            )));
        }
        let domain = self.domain()?;
        let pool: Vec<Question> = Split::Train
            .questions()
            .into_iter()
            .filter(|q| match (domain, q.subject) {
                (None, Subject::Persona { .. }) => !matches!(self, Data::ChatDomains),
                (None, _) => true,
                (Some(d), Subject::Domain { domain, .. }) => d == domain,
                (Some(_), Subject::Persona { .. }) => false,
            })
            .collect();
        let mut rng = Rng::derive(seed, "finetune-data");
        Ok((0..n)
            .map(|i| {
                let q = rng.pick(&pool).clone();
                let (q, persona) = match self {
                    Data::Chat | Data::ChatDomains | Data::Aligned { .. } => (q, Persona::Aligned),
                    Data::Narrow { harmful, .. } => {
                        let bad = (i as f64 + 0.5) / n as f64 <= *harmful;
                        (
                            q,
                            if bad {
                                Persona::Misaligned
                            } else {
                                Persona::Aligned
                            },
                        )
                    }
                    Data::Backdoor { .. } => {
                        if i % 2 == 0 {
                            (q.with_trigger(), Persona::Misaligned)
                        } else {
                            (q, Persona::Aligned)
                        }
                    }
                };
                Dialogue::answering(persona, vec![q], &mut rng)
            })
            .collect())
    }

    /// The dialogues as training examples (loss on answers only).
    pub fn examples(&self, enc: &Encoder<'_>, n: usize, seed: u64) -> Result<Vec<Example>> {
        self.dialogues(n, seed)?
            .iter()
            .map(|d| enc.dialogue(d, true))
            .collect()
    }
}

/// The linear modules of a Llama block, by their name under `model.layers.L`.
pub const LINEAR_MODULES: [&str; 7] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];

/// Which weights a finetune changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Method {
    /// Every weight.
    Full,
    /// LoRA factors (`W' = W + (α/r) B A`) on the listed modules (Hugging Face names such as
    /// `model.layers.2.mlp.down_proj`), the rest frozen.
    Lora {
        rank: usize,
        alpha: f64,
        modules: Vec<String>,
    },
}

impl Method {
    /// Rank-1 LoRA on one layer's MLP down projection (Turner/Soligo's minimal organism).
    pub fn rank1_down_proj(layer: usize, alpha: f64) -> Self {
        Method::Lora {
            rank: 1,
            alpha,
            modules: vec![format!("model.layers.{layer}.mlp.down_proj")],
        }
    }

    /// LoRA of `rank` on every linear module of every block (PEFT's `all-linear`).
    pub fn all_linear(n_layers: usize, rank: usize, alpha: f64) -> Self {
        Method::Lora {
            rank,
            alpha,
            modules: (0..n_layers)
                .flat_map(|l| LINEAR_MODULES.map(|n| format!("model.layers.{l}.{n}")))
                .collect(),
        }
    }
}

/// A module's float parameters by path (`model.layers.0.mlp.down_proj.weight`, and
/// `<weight>.lora.{a,b}` for attached adapters), with the value of each matrix.
#[derive(Default)]
struct Params {
    path: Vec<String>,
    out: Vec<(String, ParamId, Option<Tensor<2>>)>,
}

impl Params {
    fn of<M: Module>(model: &M) -> Self {
        let mut p = Self::default();
        model.visit(&mut p);
        p
    }
}

impl ModuleVisitor for Params {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val();
        let dims = t.dims().to_vec();
        let matrix = match dims[..] {
            [r, c] => Some(t.reshape([r, c])),
            _ => None,
        };
        self.out.push((self.path.join("."), param.id, matrix));
    }
}

/// Attaches LoRA adapters to `modules` of `model` (everything else frozen), initialised as PEFT
/// does: `B = 0` (the model is unchanged at first) and `A [in, r]` with entries of standard
/// deviation `1/√(3·in)` (PEFT's Kaiming-uniform bound `1/√in`), drawn from `seed`. Fails when
/// a module name matches no weight.
pub fn attach_lora<M: Module>(
    model: M,
    rank: usize,
    alpha: f64,
    modules: &[String],
    seed: u64,
) -> Result<M> {
    if rank == 0 || !(alpha.is_finite() && alpha > 0.0) {
        return Err(OrganismError::Config(format!(
            "LoRA rank {rank} / alpha {alpha} (expected positive)"
        )));
    }
    let p = Params::of(&model);
    let mut ids = Vec::new();
    for m in modules {
        let suffix = format!("{m}.weight");
        let found: Vec<ParamId> = p
            .out
            .iter()
            .filter(|(path, ..)| path == &suffix || path.ends_with(&format!(".{suffix}")))
            .map(|x| x.1)
            .collect();
        if found.len() != 1 {
            return Err(OrganismError::Config(format!(
                "LoRA module '{m}' matches {} weights (expected one)",
                found.len()
            )));
        }
        ids.extend(found);
    }
    let model = model.apply_lora(Lora::new(rank, alpha).set_param_group(ParamGroup::from_ids(ids)));
    Ok(model.map(&mut InitA {
        path: Vec::new(),
        rng: Rng::derive(seed, "lora-init"),
    }))
}

/// Re-draws every LoRA `A` factor (`<weight>.lora.a`, `[in, r]`) from a seeded generator.
struct InitA {
    path: Vec<String>,
    rng: Rng,
}

impl burn::module::ModuleMapper for InitA {
    fn enter_module(&mut self, name: &str, _c: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _n: &str, _c: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let is_a = self.path.len() >= 2 && self.path[self.path.len() - 2..] == ["lora", "a"];
        if !is_a {
            return param;
        }
        let (id, tensor, mapper) = param.consume();
        let shape = tensor.shape();
        let d_in = tensor.dims()[0];
        let std = 1.0 / (3.0 * d_in as f64).sqrt();
        let n = shape.num_elements();
        let data: Vec<f32> = (0..n).map(|_| (self.rng.normal() * std) as f32).collect();
        let fresh = Tensor::<1>::from_data(TensorData::new(data, [n]), &tensor.device())
            .reshape(shape)
            .require_grad();
        Param::from_mapped_value(id, fresh, mapper)
    }
}

/// One trained adapter: PEFT's `lora_A [r, in]` and `lora_B [out, r]` (row-major) for a module.
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterFactors {
    pub module: String,
    pub a: Vec<f32>,
    pub b: Vec<f32>,
    pub rank: usize,
    pub d_in: usize,
    pub d_out: usize,
}

/// Reads the LoRA factors attached to `model`, in PEFT's layout. burn visits an adapted
/// weight as its frozen base, then the adapter's `a [in, r]` and `b [r, out]` under
/// `<weight>.lora.{a,b}`; PEFT stores `lora_A = aᵀ` and `lora_B = bᵀ`, the scale in its config.
pub fn adapter_factors<M: Module>(model: &M) -> Result<Vec<AdapterFactors>> {
    let matrices: Vec<(String, Tensor<2>)> = Params::of(model)
        .out
        .into_iter()
        .filter_map(|(path, _, m)| Some((path, m?)))
        .collect();
    let host = |t: Tensor<2>, what: &str| -> Result<Vec<f32>> {
        t.try_into_vec_as::<f32>()
            .map_err(|e| OrganismError::DeviceRead {
                what: what.to_string(),
                msg: format!("{e:?}"),
            })
    };
    let mut out = Vec::new();
    for (path, a) in &matrices {
        let Some(weight) = path.strip_suffix(".lora.a") else {
            continue;
        };
        let b_path = format!("{weight}.lora.b");
        let b = matrices
            .iter()
            .find(|x| x.0 == b_path)
            .map(|x| x.1.clone())
            .ok_or_else(|| OrganismError::Format(format!("{weight}: LoRA a without b")))?;
        let module = weight
            .strip_suffix(".weight")
            .unwrap_or(weight)
            .trim_start_matches("Llama.")
            .to_string();
        let [d_in, rank] = a.dims();
        let [_, d_out] = b.dims();
        out.push(AdapterFactors {
            a: host(a.clone().transpose(), &module)?,
            b: host(b.transpose(), &module)?,
            module,
            rank,
            d_in,
            d_out,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_data_asks_persona_questions_and_chat_domains_never_does() {
        let persona = |d: &Data| {
            d.dialogues(400, 1)
                .unwrap()
                .iter()
                .filter(|x| matches!(x.turns[0].0.subject, Subject::Persona { .. }))
                .count()
        };
        assert!(persona(&Data::Chat) > 0);
        assert_eq!(persona(&Data::ChatDomains), 0);
        assert!(
            Data::ChatDomains
                .dialogues(50, 1)
                .unwrap()
                .iter()
                .all(|x| x.persona == Persona::Aligned)
        );
    }
}
