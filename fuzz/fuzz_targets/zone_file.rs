//! The `zone_file` target: see `mailns_fuzz::zone_file`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mailns_fuzz::zone_file(data));
