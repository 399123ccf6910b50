//! `mta-sts-daemon` on tokio.

fn main() {
    let setup = mta_sts_host::prepare_daemon();
    let code = mta_sts_tokio::block_on(|driver| mta_sts_host::daemon_main(driver, setup));
    std::process::exit(code)
}
