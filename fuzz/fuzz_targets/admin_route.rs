//! The `admin_route` target: see `mailns_fuzz::admin_route`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mailns_fuzz::admin_route(data));
