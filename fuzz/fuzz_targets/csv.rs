#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    camstream_fuzz::with_files(&[("in.csv", data)], camstream_fuzz::read_signal);
});
