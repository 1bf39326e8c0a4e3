//! The `sni` target: see `mailns_fuzz::sni`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mailns_fuzz::sni(data));
