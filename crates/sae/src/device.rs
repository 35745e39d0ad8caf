//! Choosing where the SAE computes: `cpu` (burn's `flex` backend), `wgpu` (WGSL shaders on
//! any GPU, or on Mesa's lavapipe in CI) or `vulkan` (wgpu with SPIR-V, which reaches NVIDIA
//! tensor cores; needs the `vulkan` cargo feature).

use std::fmt;
use std::str::FromStr;

use burn::tensor::{Device, DeviceType};

use crate::{Result, SaeError};

/// The device a command runs on, as spelled by `--device`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// burn's `flex` backend on the host CPU (rayon + SIMD).
    #[default]
    Cpu,
    /// wgpu with WGSL shaders, on the adapter wgpu prefers.
    Wgpu,
    /// wgpu pinned to Vulkan, compiling SPIR-V.
    Vulkan,
}

impl FromStr for DeviceChoice {
    type Err = SaeError;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" | "flex" => Ok(Self::Cpu),
            "wgpu" => Ok(Self::Wgpu),
            "vulkan" => Ok(Self::Vulkan),
            other => Err(SaeError::Config(format!(
                "unknown device '{other}': expected cpu, wgpu or vulkan"
            ))),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cpu => "cpu",
            Self::Wgpu => "wgpu",
            Self::Vulkan => "vulkan",
        })
    }
}

impl DeviceChoice {
    /// Opens the device, failing with one clear line where this build or machine lacks it
    /// (rather than burn's lazy initialisation panicking at the first tensor).
    pub fn open(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::flex()),
            Self::Wgpu => {
                let found = Device::enumerate(DeviceType::Wgpu).into_vec();
                found.into_iter().next().ok_or_else(|| {
                    SaeError::Device(
                        "wgpu device: no wgpu adapter found (install a Vulkan driver, e.g. \
                         Debian's mesa-vulkan-drivers for lavapipe)"
                            .into(),
                    )
                })
            }
            Self::Vulkan => open_vulkan(),
        }
    }
}

#[cfg(feature = "vulkan")]
fn open_vulkan() -> Result<Device> {
    let found = Device::enumerate(DeviceType::Vulkan).into_vec();
    found.into_iter().next().ok_or_else(|| {
        SaeError::Device(
            "vulkan device: no Vulkan adapter found (set VK_DRIVER_FILES to the GPU's ICD json)"
                .into(),
        )
    })
}

#[cfg(not(feature = "vulkan"))]
fn open_vulkan() -> Result<Device> {
    Err(SaeError::Device(
        "vulkan device: this build has no SPIR-V support; rebuild with `--features vulkan` \
         (off by default because Mesa's lavapipe crashes compiling SPIR-V)"
            .into(),
    ))
}
