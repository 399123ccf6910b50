//! `mta-sts-query` on smol.

use crate::{SmolRuntime, SmolTransport};
use mta_sts_core::cli::{parse_query_args, QueryArgs};
use mta_sts_core::config::Config;
use mta_sts_core::host;
use mta_sts_core::service::{run_query, DnsClient};
use std::sync::Arc;

/// The program: look the domain up once and print what was found.
/// Exits 0 for a valid policy (or NOT_CHANGED), 1 for no policy, 2 for a
/// fetch error or bad arguments.
pub fn main() -> ! {
    let args = host::parse_or_exit(parse_query_args(std::env::args_os().skip(1).collect()));
    let _ = host::init_logging(args.verbosity.to_log_filter(), None);
    std::process::exit(smol::block_on(run(args)))
}

async fn run(args: QueryArgs) -> i32 {
    let config = match &args.config {
        Some(path) => match host::load_config(path) {
            Ok(config) => config,
            Err(e) => {
                eprintln!("mta-sts-query: {e}");
                return 2;
            }
        },
        None => Config::default(),
    };
    let tls = match host::policy_tls_connector(&config) {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("mta-sts-query: {e}");
            return 2;
        }
    };
    let transport = Arc::new(SmolTransport::new(tls));
    let targets = host::dns_settings(&config);
    let dns = DnsClient::new(
        SmolRuntime,
        transport.clone(),
        targets.servers,
        targets.attempts,
        targets.try_timeout,
    );
    let outcome = run_query(
        &dns,
        transport.as_ref(),
        &args.domain,
        args.known_id.as_deref(),
        config.resolver.policy_port,
        &config.resolver.user_agent,
    )
    .await;
    if args.json {
        println!("{}", outcome.to_json(&args.domain));
    } else {
        print!("{}", outcome.to_text(&args.domain));
    }
    outcome.exit_code()
}
