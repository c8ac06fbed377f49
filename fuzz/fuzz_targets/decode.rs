//! Arbitrary bytes into the decoder (server and client side, both versions);
//! every packet it accepts must survive encode → decode → encode unchanged.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ringmq_protocol::fuzzing::decode(data));
