//! The end-to-end suite (docs/ARCHITECTURE.md "Testing") run against the tokio programs.

mta_sts_tests::e2e_suite!(
    env!("CARGO_BIN_EXE_mta-sts-daemon"),
    env!("CARGO_BIN_EXE_mta-sts-query")
);
