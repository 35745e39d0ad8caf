//! An SAE on a burn device for inference: encode, decode, decoder rows and the reconstruction
//! error, for every architecture. Evaluation, feature search and steering all encode through
//! it; the host-side [`SaeWeights`] forward is its oracle (tests below).
//!
//! ```text
//! pre = (x − a·b_dec) W_enc + b_enc          a = apply_b_dec_to_input
//! f   = σ(pre)     Relu: relu(pre); TopK{k}: the k largest of relu(pre) per row;
//!                  JumpRelu (and BatchTopK with its threshold θ): pre·1[pre > θ]
//!                  (θ ≥ 0, so this is relu(pre)·1[pre > θ]); BatchTopK without θ: TopK{k}
//! x̂   = f W_dec + b_dec,   error = x − x̂
//! ```
//!
//! ```
//! use burn::tensor::{Device, Tensor, TensorData};
//! use lantern_sae::{Arch, Sae, SaeConfig, SaeWeights};
//! let cfg = SaeConfig { d_in: 2, d_sae: 2, arch: Arch::Relu, apply_b_dec_to_input: false,
//!                       hook_name: String::new(), model_name: String::new() };
//! let w = SaeWeights { cfg, w_enc: vec![1.0, 0.0, 0.0, 1.0], b_enc: vec![0.0, 0.0],
//!                      w_dec: vec![1.0, 0.0, 0.0, 1.0], b_dec: vec![0.0, 0.0], threshold: None };
//! let dev = Device::flex();
//! let sae = Sae::from_weights(&w, &dev)?;
//! let x = Tensor::<2>::from_data(TensorData::new(vec![2.0f32, -1.0], [1, 2]), &dev);
//! let f = sae.encode(&x).try_into_vec_as::<f32>().unwrap();
//! assert_eq!(f, [2.0, 0.0]); // relu
//! # Ok::<(), lantern_sae::SaeError>(())
//! ```

use burn::tensor::{Device, IndexingUpdateOp, Tensor};
use lantern_kernels::Preacts;

use crate::params::{Params, upload1};
use crate::sparse::{self, Coo};
use crate::step::{encoder_input, pre_acts};
use crate::{Arch, Result, SaeConfig, SaeWeights};

/// An SAE's parameters on a device, with its config.
#[derive(Clone, Debug)]
pub struct Sae {
    pub cfg: SaeConfig,
    pub params: Params,
    /// `θ [d_sae]` of a JumpReLU (or of a BatchTopK exported as JumpReLU).
    pub threshold: Option<Tensor<1>>,
}

/// How one batch was reconstructed: `x̂ [B, d]`, the number of active latents in the batch
/// `[1]` and each latent's fire count `[d_sae]`.
pub struct Reconstruction {
    pub x_hat: Tensor<2>,
    pub active: Tensor<1>,
    pub fires: Tensor<1>,
}

/// Which selection σ makes (see the module docs).
enum Sigma {
    Relu,
    TopK(usize),
    Jump,
}

impl Sae {
    /// Validates `w` and uploads it to `device`.
    pub fn from_weights(w: &SaeWeights, device: &Device) -> Result<Self> {
        w.validate()?;
        Ok(Self {
            cfg: w.cfg.clone(),
            params: Params::from_weights(w, device),
            threshold: w.threshold.as_ref().map(|t| upload1(t, device)),
        })
    }

    fn sigma(&self) -> Sigma {
        match (self.cfg.arch, &self.threshold) {
            (Arch::JumpRelu | Arch::BatchTopK { .. }, Some(_)) => Sigma::Jump,
            (Arch::TopK { k } | Arch::BatchTopK { k }, _) if k < self.cfg.d_sae => Sigma::TopK(k),
            _ => Sigma::Relu,
        }
    }

    /// `pre = (x − a·b_dec) W_enc + b_enc`, `[B, d_sae]` for `x [B, d_in]`.
    pub fn pre_acts(&self, x: &Tensor<2>) -> Tensor<2> {
        pre_acts(
            &self.params,
            &encoder_input(&self.params, x, self.cfg.apply_b_dec_to_input),
        )
    }

    /// [`Self::pre_acts`] with `b_enc` and the ReLU still to apply, for a TopK selection that
    /// applies them as it reads (on a GPU the activations `[B, d_sae]` are then never written).
    fn pending_acts(&self, x: &Tensor<2>) -> Preacts {
        let xc = encoder_input(&self.params, x, self.cfg.apply_b_dec_to_input);
        Preacts {
            gemm: xc.matmul(self.params.w_enc.clone()),
            bias: self.params.b_enc.clone(),
        }
    }

    /// The active latents of `x` in coordinate form when σ selects a fixed `k` per row
    /// (TopK, BatchTopK without threshold); `None` for the dense nonlinearities.
    pub fn encode_sparse(&self, x: &Tensor<2>) -> Option<Coo> {
        match self.sigma() {
            Sigma::TopK(k) => Some(sparse::top_k_per_row(self.pending_acts(x), k)),
            _ => None,
        }
    }

    /// `f = σ(pre)`, dense `[B, d_sae]`.
    pub fn encode(&self, x: &Tensor<2>) -> Tensor<2> {
        match self.sigma() {
            Sigma::Relu => self.pre_acts(x).clamp_min(0.0),
            Sigma::Jump => self.jump(self.pre_acts(x)),
            Sigma::TopK(k) => {
                let pre = self.pending_acts(x);
                let [b, _] = pre.gemm.dims();
                let zeros = pre.gemm.zeros_like();
                let coo = sparse::top_k_per_row(pre, k);
                zeros.scatter(
                    1,
                    coo.lat.reshape([b, k]),
                    coo.val.reshape([b, k]),
                    IndexingUpdateOp::Add,
                )
            }
        }
    }

    fn jump(&self, pre: Tensor<2>) -> Tensor<2> {
        let theta = self
            .threshold
            .clone()
            .expect("Sigma::Jump has a threshold")
            .unsqueeze_dim::<2>(0);
        pre.clone() * pre.greater(theta).float()
    }

    /// `x̂ = f W_dec + b_dec`, `[B, d_in]` for `f [B, d_sae]`.
    pub fn decode(&self, f: &Tensor<2>) -> Tensor<2> {
        f.clone().matmul(self.params.w_dec.clone()) + self.params.b_dec.clone().unsqueeze_dim(0)
    }

    /// Decoder row `i` (latent `i`'s direction in the residual stream), `[d_in]`.
    pub fn decoder_row(&self, i: usize) -> Tensor<1> {
        let d = self.cfg.d_in;
        self.params.w_dec.clone().narrow(0, i, 1).reshape([d])
    }

    /// `x − x̂`, the part of `x` the SAE does not reconstruct.
    pub fn error(&self, x: &Tensor<2>) -> Tensor<2> {
        x.clone() - self.reconstruct(x).x_hat
    }

    /// The forward pass at inference with its statistics (TopK decodes sparsely).
    pub fn reconstruct(&self, x: &Tensor<2>) -> Reconstruction {
        let [batch, _] = x.dims();
        let m = self.cfg.d_sae;
        let b_dec = self.params.b_dec.clone().unsqueeze_dim(0);
        match self.encode_sparse(x) {
            Some(coo) => {
                let k = coo.len() / batch.max(1);
                Reconstruction {
                    x_hat: sparse::decode_per_row(&coo, &self.params.w_dec, batch, k) + b_dec,
                    active: coo.val.clone().greater_elem(0.0).float().sum(),
                    fires: sparse::fire_counts(&coo, m),
                }
            }
            None => {
                let f = self.encode(x);
                let fired = f.clone().greater_elem(0.0).float();
                Reconstruction {
                    x_hat: self.decode(&f),
                    active: fired.clone().sum(),
                    fires: fired.sum_dim(0).reshape([m]),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    /// A random SAE of `arch` with its host weights.
    fn random(arch: Arch, threshold: bool, apply_b_dec: bool) -> SaeWeights {
        let (d, m) = (6, 10);
        let mut s = 0x2545_f491_4f6c_dd1du64;
        let mut r = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                })
                .collect()
        };
        SaeWeights {
            cfg: SaeConfig {
                d_in: d,
                d_sae: m,
                arch,
                apply_b_dec_to_input: apply_b_dec,
                hook_name: String::new(),
                model_name: String::new(),
            },
            w_enc: r(d * m),
            b_enc: r(m),
            w_dec: r(m * d),
            b_dec: r(d),
            threshold: threshold.then(|| r(m).iter().map(|t| t.abs() * 0.3).collect()),
        }
    }

    #[test]
    fn device_sae_matches_the_host_forward_for_every_architecture() {
        let dev = Device::flex();
        let cases = [
            (Arch::Relu, false, true),
            (Arch::TopK { k: 3 }, false, false),
            (Arch::TopK { k: 3 }, false, true),
            (Arch::BatchTopK { k: 2 }, false, true),
            (Arch::BatchTopK { k: 2 }, true, true),
            (Arch::JumpRelu, true, false),
        ];
        for (arch, thr, a) in cases {
            let w = random(arch, thr, a);
            let sae = Sae::from_weights(&w, &dev).unwrap();
            let n = 7;
            let x: Vec<f32> = (0..n * 6)
                .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.3)
                .collect();
            let xt = Tensor::<2>::from_data(TensorData::new(x.clone(), [n, 6]), &dev);
            let host = |t: Tensor<2>| t.try_into_vec_as::<f32>().unwrap();
            let close = |a: &[f32], b: &[f32], what: &str| {
                assert_eq!(a.len(), b.len());
                for (i, (p, q)) in a.iter().zip(b).enumerate() {
                    assert!((p - q).abs() <= 1e-5, "{arch:?} {what}[{i}]: {p} vs {q}");
                }
            };
            let f = w.encode(&x);
            close(&host(sae.encode(&xt)), &f, "f");
            let x_hat = w.decode(&f);
            close(&host(sae.decode(&sae.encode(&xt))), &x_hat, "decode");
            close(&host(sae.reconstruct(&xt).x_hat), &x_hat, "x_hat");
            let err: Vec<f32> = x.iter().zip(&x_hat).map(|(a, b)| a - b).collect();
            close(&host(sae.error(&xt)), &err, "error");
            let row = sae.decoder_row(4).try_into_vec_as::<f32>().unwrap();
            assert_eq!(row, w.w_dec[4 * 6..5 * 6]);
            let fires = sae.reconstruct(&xt).fires.try_into_vec_as::<f32>().unwrap();
            for j in 0..10 {
                let want = (0..n).filter(|r| f[r * 10 + j] > 0.0).count() as f32;
                assert_eq!(fires[j], want, "{arch:?} fires of latent {j}");
            }
        }
    }
}
