//! The `dns_udp` target: see `mailns_fuzz::dns_udp`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mailns_fuzz::dns_udp(data));
