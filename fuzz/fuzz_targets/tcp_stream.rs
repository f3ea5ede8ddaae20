//! An NVMe/TCP connection fed an arbitrary byte stream: see
//! `nvmf_target::fuzzing::tcp_stream`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    nvmf_target::fuzzing::tcp_stream(data);
});
