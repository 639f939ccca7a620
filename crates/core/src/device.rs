//! Where the network runs: `--device auto|cpu|cuda[:N]`. A build with the `cuda` feature
//! loads the CUDA libraries at run time (cudarc's dynamic loading), so the same binary
//! starts on a machine without them and `auto` falls back to the CPU.

use candle_core::Device;

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    Auto,
    Cpu,
    Cuda(usize),
}

impl DeviceChoice {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Self::Auto),
            "cpu" => Some(Self::Cpu),
            "cuda" | "gpu" => Some(Self::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|i| i.parse().ok())
                .map(Self::Cuda),
        }
    }
}

/// True when this binary was built with the `cuda` feature.
pub fn cuda_built() -> bool {
    cfg!(feature = "cuda")
}

/// Why CUDA cannot be used here, or the device.
#[cfg(feature = "cuda")]
fn open_cuda(ordinal: usize) -> std::result::Result<Device, String> {
    // SAFETY: only probes whether the driver library can be loaded.
    let present = std::panic::catch_unwind(|| unsafe { cudarc::driver::sys::is_culib_present() })
        .unwrap_or(false);
    if !present {
        return Err("the CUDA driver library (libcuda.so.1) is not installed".into());
    }
    // cudarc panics when a library it needs is missing; report, don't crash.
    match std::panic::catch_unwind(|| Device::new_cuda(ordinal)) {
        Ok(Ok(d)) => {
            // Keep float32 matrix products exact (no TF32), as on the CPU.
            candle_core::cuda::set_gemm_reduced_precision_f32(false);
            Ok(d)
        }
        Ok(Err(e)) => Err(e.to_string().lines().next().unwrap_or("").to_string()),
        Err(_) => Err(
            "a CUDA library (cuBLAS, cuRAND or NVRTC) could not be loaded; \
                       put its folder on LD_LIBRARY_PATH"
                .into(),
        ),
    }
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(_ordinal: usize) -> std::result::Result<Device, String> {
    Err(
        "this camstream was built without CUDA (build with `scripts/build-cuda.sh`, \
         i.e. cargo build --release --features cuda)"
            .into(),
    )
}

/// The device for a choice, and a line saying which was taken (for stderr).
pub fn select(choice: DeviceChoice) -> Result<(Device, String)> {
    match choice {
        DeviceChoice::Cpu => Ok((Device::Cpu, "device: cpu".into())),
        DeviceChoice::Cuda(i) => match open_cuda(i) {
            Ok(d) => Ok((d, format!("device: cuda:{i}"))),
            Err(why) => Err(Error::Device(format!("`device` cuda:{i}: {why}"))),
        },
        DeviceChoice::Auto => match open_cuda(0) {
            Ok(d) => Ok((d, "device: cuda:0 (auto)".into())),
            Err(why) if cuda_built() => {
                Ok((Device::Cpu, format!("device: cpu (auto; no CUDA: {why})")))
            }
            Err(_) => Ok((Device::Cpu, "device: cpu (auto; built without CUDA)".into())),
        },
    }
}

/// Builds rayon's global pool, where gemm and the convolutions run, with its threads named
/// `rayon-N` (a profile by thread tells them from FFmpeg's) and subnormal floats flushed
/// on each (see [`flush_denormals`]). The size comes from `RAYON_NUM_THREADS`. Returns
/// false when the pool already exists (built by an earlier call or by a first use).
pub fn init_cpu_pool() -> bool {
    rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("rayon-{i}"))
        .start_handler(|_| flush_denormals())
        .build_global()
        .is_ok()
}

/// Treats subnormal floats as zero on the calling thread (x86-64's FTZ and DAZ flags;
/// elsewhere nothing). Trained networks push activations below 1.2e-38 (SiLU and sigmoid
/// gates of large negative inputs), and every multiply on one then costs a microcode
/// assist: the zoo's EfficientNet-B0, BatchNorm calibrated on photos, ran its forward at
/// 24 img/s with them and 95 without (2-vCPU Xeon, batch 8; PyTorch: 75). Values that
/// small change no map. The flags belong to the thread, so the pool sets them on its own.
pub fn flush_denormals() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: sets two bits of this thread's SSE control register (flush-to-zero 0x8000,
    // denormals-are-zero 0x0040), which every x86-64 CPU has; nothing else changes.
    #[allow(deprecated)]
    unsafe {
        use std::arch::x86_64::{_mm_getcsr, _mm_setcsr};
        _mm_setcsr(_mm_getcsr() | 0x8040);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_fallback() {
        assert_eq!(DeviceChoice::parse("cuda:1"), Some(DeviceChoice::Cuda(1)));
        assert_eq!(DeviceChoice::parse("cuda"), Some(DeviceChoice::Cuda(0)));
        assert_eq!(DeviceChoice::parse("tpu"), None);
        let (d, msg) = select(DeviceChoice::Cpu).unwrap();
        assert!(d.is_cpu() && msg == "device: cpu");
        // This machine has no GPU: auto must give the CPU, cuda a clear error.
        if !cuda_built() {
            let (d, msg) = select(DeviceChoice::Auto).unwrap();
            assert!(d.is_cpu() && msg.contains("auto"));
            let e = select(DeviceChoice::Cuda(0)).unwrap_err().to_string();
            assert!(e.contains("built without CUDA"), "{e}");
        }
    }

    /// After the call, a product that would be subnormal is zero on this thread (its own
    /// thread: the flags must not leak into other tests).
    #[test]
    fn flushed_threads_make_no_subnormals() {
        let small = std::hint::black_box(1e-20f32);
        let before = std::thread::spawn(move || small * small).join().unwrap();
        let after = std::thread::spawn(move || {
            flush_denormals();
            small * small
        })
        .join()
        .unwrap();
        assert!(before > 0.0 && before.is_subnormal());
        if cfg!(target_arch = "x86_64") {
            assert_eq!(after, 0.0);
        }
    }
}
