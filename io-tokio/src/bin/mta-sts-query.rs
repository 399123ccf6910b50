//! `mta-sts-query` on tokio.

fn main() {
    let args = mta_sts_host::query_args();
    let code = mta_sts_tokio::block_on(|driver| mta_sts_host::query_main(driver, args));
    std::process::exit(code)
}
