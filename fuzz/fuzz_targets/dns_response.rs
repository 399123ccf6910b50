//! DNS responses: parsing arbitrary bytes as the answer to a TXT, A,
//! AAAA, MX or TLSA query, or to the root SOA query of the DNSSEC
//! self-check, never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mta_sts_core::dns::{parse_response_full, QueryType};

fuzz_target!(|data: &[u8]| {
    let id = data.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])).unwrap_or(0);
    for qtype in [
        QueryType::Txt,
        QueryType::A,
        QueryType::Aaaa,
        QueryType::Mx,
        QueryType::Tlsa,
    ] {
        let _ = parse_response_full(data, id, "_mta-sts.example.com", qtype);
    }
    let _ = parse_response_full(data, id, ".", QueryType::Soa);
});
