//! `mta-sts-daemon` on smol.

fn main() {
    let setup = mta_sts_host::prepare_daemon();
    let code = smol::block_on(mta_sts_host::daemon_main(mta_sts_smol::SmolDriver, setup));
    std::process::exit(code)
}
