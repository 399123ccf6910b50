//! `mta-sts-query` on smol.

fn main() {
    let args = mta_sts_host::query_args();
    let code = smol::block_on(mta_sts_host::query_main(mta_sts_smol::SmolDriver, args));
    std::process::exit(code)
}
