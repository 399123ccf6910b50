//! Mail through a real Postfix whose TLS policy comes from the smol programs
//! (docs/ARCHITECTURE.md "Testing"): delivered or deferred as each answer demands.

fn main() -> std::process::ExitCode {
    mta_sts_tests::delivery::main(env!("CARGO_BIN_EXE_mta-sts-daemon"))
}
