//! The `xfr` target: see `mailns_fuzz::xfr`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mailns_fuzz::xfr(data));
