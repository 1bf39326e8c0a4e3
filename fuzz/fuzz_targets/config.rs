//! The `config` target: see `mailns_fuzz::config`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mailns_fuzz::config(data));
