#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = jewel_net::fuzzing::check_request(data) {
        panic!("{e}");
    }
});
