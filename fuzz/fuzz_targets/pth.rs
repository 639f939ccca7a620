#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    camstream_fuzz::with_files(&[("w.pth", data)], |p| {
        let _ = camstream_core::model::Weights::load(p, &candle_core::Device::Cpu);
    });
});
