//! The `notify` target: see `mailns_fuzz::notify`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mailns_fuzz::notify(data));
