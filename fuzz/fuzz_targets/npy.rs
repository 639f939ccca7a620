#![no_main]

// A .npy as a recording (signal reader) and as model inputs (whole-tensor reader).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    camstream_fuzz::with_files(&[("in.npy", data)], |p| {
        camstream_fuzz::read_signal(p);
        let _ = camstream_media::npy::read_npy(p);
    });
});
