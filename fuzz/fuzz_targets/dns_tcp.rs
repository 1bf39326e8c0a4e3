//! The `dns_tcp` target: see `mailns_fuzz::dns_tcp`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mailns_fuzz::dns_tcp(data));
