//! Arbitrary commands from a well-behaved host, checked against a model of
//! the namespaces: see `nvmf_target::fuzzing::controller`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    nvmf_target::fuzzing::controller(data);
});
