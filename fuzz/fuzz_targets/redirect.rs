//! The `redirect` target: see `mailns_fuzz::redirect`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mailns_fuzz::redirect(data));
