//! SAE parameters on a burn device, and their conversion to and from the host-side
//! [`crate::SaeWeights`].

use burn::tensor::{Device, Tensor, TensorData};

use crate::{Arch, Result, SaeConfig, SaeError, SaeWeights};

/// Parameters of an SAE on a device (DESIGN.md conventions):
/// `W_enc [d_in, d_sae]`, `b_enc [d_sae]`, `W_dec [d_sae, d_in]`, `b_dec [d_in]`, and for
/// JumpReLU the log of the per-latent threshold (`θ = exp(log_threshold)`, kept positive).
#[derive(Clone, Debug)]
pub struct Params {
    /// Encoder weight, `[d_in, d_sae]`.
    pub w_enc: Tensor<2>,
    /// Encoder bias, `[d_sae]`.
    pub b_enc: Tensor<1>,
    /// Decoder weight, `[d_sae, d_in]`.
    pub w_dec: Tensor<2>,
    /// Decoder bias, `[d_in]`.
    pub b_dec: Tensor<1>,
    /// `log θ` for JumpReLU, `[d_sae]`.
    pub log_threshold: Option<Tensor<1>>,
}

impl Params {
    /// `[d_in, d_sae]`.
    pub fn dims(&self) -> (usize, usize) {
        let [d_in, d_sae] = self.w_enc.dims();
        (d_in, d_sae)
    }

    /// The same parameters with every tensor replaced by `f(tensor)`; `f` sees rank-2 and
    /// rank-1 tensors through [`ParamTensor`].
    pub fn map(&self, mut f: impl FnMut(ParamTensor) -> ParamTensor) -> Self {
        Self {
            w_enc: f(ParamTensor::Two(self.w_enc.clone())).two(),
            b_enc: f(ParamTensor::One(self.b_enc.clone())).one(),
            w_dec: f(ParamTensor::Two(self.w_dec.clone())).two(),
            b_dec: f(ParamTensor::One(self.b_dec.clone())).one(),
            log_threshold: self
                .log_threshold
                .as_ref()
                .map(|t| f(ParamTensor::One(t.clone())).one()),
        }
    }

    /// Zeros of the same shapes.
    pub fn zeros_like(&self) -> Self {
        self.map(|t| match t {
            ParamTensor::One(t) => ParamTensor::One(t.zeros_like()),
            ParamTensor::Two(t) => ParamTensor::Two(t.zeros_like()),
        })
    }

    /// 1-element zeros of each parameter: what a state holds where another owner (the CPU
    /// engine) has the real tensors, so that no second full copy exists.
    pub fn stand_in(device: &Device) -> Self {
        Self {
            w_enc: Tensor::zeros([1, 1], device),
            b_enc: Tensor::zeros([1], device),
            w_dec: Tensor::zeros([1, 1], device),
            b_dec: Tensor::zeros([1], device),
            log_threshold: None,
        }
    }

    /// Uploads host weights. JumpReLU thresholds are stored as `log θ` (θ clamped ≥ 1e-12).
    pub fn from_weights(w: &SaeWeights, device: &Device) -> Self {
        let (d_in, d_sae) = (w.cfg.d_in, w.cfg.d_sae);
        Self {
            w_enc: upload2(&w.w_enc, [d_in, d_sae], device),
            b_enc: upload1(&w.b_enc, device),
            w_dec: upload2(&w.w_dec, [d_sae, d_in], device),
            b_dec: upload1(&w.b_dec, device),
            log_threshold: match (w.cfg.arch, &w.threshold) {
                (Arch::JumpRelu, Some(t)) => {
                    let logs: Vec<f32> = t.iter().map(|v| v.max(1e-12).ln()).collect();
                    Some(upload1(&logs, device))
                }
                _ => None,
            },
        }
    }

    /// Downloads to host weights with the given config; `threshold` overrides the JumpReLU
    /// threshold (BatchTopK's learned global threshold).
    pub fn to_weights(&self, cfg: SaeConfig, threshold: Option<Vec<f32>>) -> Result<SaeWeights> {
        let threshold = match (threshold, &self.log_threshold) {
            (Some(t), _) => Some(t),
            (None, Some(log_t)) => Some(download(log_t.clone().exp())?),
            (None, None) => None,
        };
        Ok(SaeWeights {
            cfg,
            w_enc: download(self.w_enc.clone())?,
            b_enc: download(self.b_enc.clone())?,
            w_dec: download(self.w_dec.clone())?,
            b_dec: download(self.b_dec.clone())?,
            threshold,
        })
    }
}

/// A parameter tensor of either rank, for [`Params::map`].
pub enum ParamTensor {
    /// A vector.
    One(Tensor<1>),
    /// A matrix.
    Two(Tensor<2>),
}

impl ParamTensor {
    fn one(self) -> Tensor<1> {
        match self {
            Self::One(t) => t,
            Self::Two(_) => unreachable!("Params::map must keep each tensor's rank"),
        }
    }

    fn two(self) -> Tensor<2> {
        match self {
            Self::Two(t) => t,
            Self::One(_) => unreachable!("Params::map must keep each tensor's rank"),
        }
    }
}

/// Host `f32` slice to a `[n]` tensor.
pub fn upload1(v: &[f32], device: &Device) -> Tensor<1> {
    Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), device)
}

/// Host row-major `f32` slice to a `[r, c]` tensor.
pub fn upload2(v: &[f32], shape: [usize; 2], device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(v.to_vec(), shape), device)
}

/// Any float tensor to a host `Vec<f32>` (row-major); fails if the device cannot be read.
pub fn download<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.try_into_vec_as::<f32>()
        .map_err(|e| SaeError::Device(format!("reading a tensor back from the device: {e}")))
}

/// A one-element tensor to an `f64`.
pub fn scalar(t: Tensor<1>) -> Result<f64> {
    Ok(download(t)?.first().copied().unwrap_or(f32::NAN) as f64)
}
