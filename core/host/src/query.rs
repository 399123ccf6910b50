//! `mta-sts-query`: one policy lookup printed for a person or a script, or
//! the cache administration commands (README.md "Cache administration"):
//! through the running daemon's administration socket (`metrics.path`) when
//! the config has one (so a purge takes effect at once), else straight on
//! the persistent store the config names.

use std::io::Read;

use mta_sts_core::cli::{parse_query_args, CacheCommand, QueryAction, QueryArgs};
use mta_sts_core::config::{CacheConfig, Config};
use mta_sts_core::dane::{self, DaneFailure, DaneResult};
use mta_sts_core::domain::{normalize_key, Domain};
use mta_sts_core::service::{
    export_line, lookup_dane, parse_export_line, run_query, summary_line, with_timeout, CacheAdmin,
    DaneQuery, QueryOutcome,
};

use crate::daemon::{open_store, Driver};
use crate::{dns_settings, load_config, parse_or_exit, policy_tls_roots};

/// The query program's arguments, parsed (or help/usage printed and exit).
pub fn query_args() -> QueryArgs {
    let args = parse_or_exit(parse_query_args(std::env::args_os().skip(1).collect()));
    let _ = crate::init_logging(args.verbosity.to_log_filter(), None, Some(args.log_format));
    args
}

/// `mta-sts-query`. Returns the exit status: for a lookup 0 valid policy
/// (or NOT_CHANGED), 1 no policy, 2 fetch error or bad arguments; for a
/// cache command 0 done, 1 not found, 2 error.
pub async fn query_main<D: Driver>(driver: D, args: QueryArgs) -> i32 {
    let config = match &args.config {
        Some(path) => match load_config(path) {
            Ok(config) => config,
            Err(e) => {
                eprintln!("mta-sts-query: {e}");
                return 2;
            }
        },
        None => Config::default(),
    };
    match &args.action {
        QueryAction::Lookup { domain, known_id } => {
            lookup(
                &driver,
                &config,
                domain,
                known_id.as_deref(),
                args.json,
                args.dane,
            )
            .await
        }
        QueryAction::Cache(command) => match cache(&driver, &config, command, args.json).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("mta-sts-query: {e}");
                2
            }
        },
    }
}

async fn lookup<D: Driver>(
    driver: &D,
    config: &Config,
    domain: &str,
    known_id: Option<&str>,
    json: bool,
    dane: bool,
) -> i32 {
    let transport = match policy_tls_roots(config) {
        Ok(roots) => driver.transport(roots),
        Err(e) => {
            eprintln!("mta-sts-query: {e}");
            return 2;
        }
    };
    let targets = dns_settings(config);
    let with_dane = dane || config.default_zone.dane;
    if with_dane {
        let mut dane_config = config.clone();
        dane_config.default_zone.dane = true;
        if let Some(warning) = dane::nameserver_warning(&dane_config, &targets.servers) {
            log::warn!("{warning}");
        }
    }
    let dns = targets.client(driver.runtime(), transport.clone());
    let query = run_query(
        &dns,
        transport.as_ref(),
        domain,
        known_id,
        config.resolver.policy_port,
        &config.resolver.user_agent,
    );
    // Bounded like a daemon lookup: the default zone's timeout (4 s), for
    // each side of the two that run at once.
    let limit = config.default_zone.timeout;
    let rt = driver.runtime();
    let sts = async {
        with_timeout(&rt, limit, query)
            .await
            .unwrap_or_else(|| QueryOutcome::FetchError(format!("timed out after {limit:?}")))
    };
    let dane_domain = normalize_key(domain).ok().filter(|_| with_dane);
    let dane = async {
        let d = dane_domain.as_ref()?;
        let lookup = async {
            let result = with_timeout(&rt, limit, lookup_dane(&dns, d)).await;
            result.unwrap_or_else(|| DaneResult::failed(DaneFailure::Timeout))
        };
        // Whether the answer rests on a validating resolver, asked at once.
        Some(futures::join!(
            lookup,
            crate::dnssec::check_and_log(&dns, config)
        ))
    };
    let (outcome, dane) = futures::join!(sts, dane);
    let (text, json_text, code) = match dane {
        Some((dane, dnssec)) => {
            let report = DaneQuery {
                sts: outcome,
                dane,
                opts: config.default_zone.reply_options(),
                dnssec,
            };
            (
                report.to_text(domain),
                report.to_json(domain),
                report.exit_code(),
            )
        }
        None => (
            outcome.to_text(domain),
            outcome.to_json(domain),
            outcome.exit_code(),
        ),
    };
    if json {
        println!("{json_text}");
    } else {
        print!("{text}");
    }
    code
}

fn domain(name: &str) -> Result<Domain, String> {
    mta_sts_core::domain::normalize_key(name).map_err(|e| format!("{name:?}: {e}"))
}

/// Run a cache command through the daemon's endpoint, or on the store.
async fn cache<D: Driver>(
    driver: &D,
    config: &Config,
    command: &CacheCommand,
    json: bool,
) -> Result<i32, String> {
    let import_text = match command {
        CacheCommand::Import(path) if path.as_os_str() == "-" => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| format!("standard input: {e}"))?;
            Some(text)
        }
        CacheCommand::Import(path) => {
            Some(std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?)
        }
        _ => None,
    };
    // Only the Unix socket serves `/cache`; a TCP `listen` alone serves
    // metrics, so the store is used as when there is no endpoint.
    if let Some(socket) = config.metrics.as_ref().and_then(|m| m.unix.as_ref()) {
        let limit = mta_sts_core::admin::import_limit(config.cache.memory_size());
        if let Some(text) = import_text.as_deref().filter(|t| t.len() > limit) {
            return Err(format!(
                "the import is {} bytes, over the daemon's limit of {limit} (README.md \
                 \"Cache administration\"): import it in parts",
                text.len()
            ));
        }
        return via_endpoint(&socket.path, command, import_text.as_deref(), json);
    }
    if matches!(config.cache, CacheConfig::Internal { .. }) {
        return Err(
            "the internal cache lives in the running daemon: give it an administration \
             socket, `metrics: {path: ...}` (README.md \"Cache administration\"), and pass \
             its config with -c"
                .into(),
        );
    }
    let store = open_store(driver, config)
        .await?
        .ok_or("no persistent cache configured")?;
    eprintln!(
        "mta-sts-query: no `metrics.path` socket in the config: acting on the store directly; \
         a running daemon keeps its memory copy until it is evicted or restarted"
    );
    let admin = CacheAdmin::new(None, Some(store), crate::unix_ms);
    let fail = |e: mta_sts_core::service::AdminError| e.to_string();
    match command {
        CacheCommand::List | CacheCommand::Export => {
            let entries = admin.list().await.map_err(fail)?;
            for (d, e) in &entries {
                if json || matches!(command, CacheCommand::Export) {
                    println!("{}", export_line(d, e));
                } else {
                    println!("{}", summary_line(d, e));
                }
            }
            Ok(0)
        }
        CacheCommand::Show(name) => {
            let d = domain(name)?;
            match admin.show(&d).await.map_err(fail)? {
                Some(e) if json => {
                    println!("{}", export_line(&d, &e));
                    Ok(0)
                }
                Some(e) => {
                    println!("{}", summary_line(&d, &e));
                    Ok(0)
                }
                None => {
                    eprintln!("{d}: not cached");
                    Ok(1)
                }
            }
        }
        CacheCommand::Import(_) => {
            let n = admin
                .import(import_text.as_deref().unwrap_or_default())
                .await
                .map_err(fail)?;
            println!("imported {n}");
            Ok(0)
        }
        CacheCommand::Purge(name) => {
            let d = domain(name)?;
            if admin.purge(&d).await.map_err(fail)? {
                println!("purged {d}");
                Ok(0)
            } else {
                eprintln!("{d}: not cached");
                Ok(1)
            }
        }
        CacheCommand::PurgeAll => {
            println!("purged {}", admin.purge_all().await.map_err(fail)?);
            Ok(0)
        }
    }
}

fn via_endpoint(
    socket: &std::path::Path,
    command: &CacheCommand,
    import: Option<&str>,
    json: bool,
) -> Result<i32, String> {
    let call = |method: &str, path: &str, body: &[u8]| {
        crate::admin_http::request(socket, method, path, body).map_err(|e| {
            format!(
                "cannot reach the daemon's administration socket {}: {e}",
                socket.display()
            )
        })
    };
    let (status, body) = match command {
        CacheCommand::List | CacheCommand::Export => call("GET", "/cache", b"")?,
        CacheCommand::Show(name) => call("GET", &format!("/cache/{}", domain(name)?), b"")?,
        CacheCommand::Import(_) => call("POST", "/cache", import.unwrap_or_default().as_bytes())?,
        CacheCommand::Purge(name) => call("DELETE", &format!("/cache/{}", domain(name)?), b"")?,
        CacheCommand::PurgeAll => call("DELETE", "/cache", b"")?,
    };
    let readable = !json && matches!(command, CacheCommand::List | CacheCommand::Show(_));
    match status {
        200 if readable => {
            for line in body.lines().filter(|l| !l.trim().is_empty()) {
                match parse_export_line(line) {
                    Ok((d, e)) => println!("{}", summary_line(&d, &e)),
                    Err(_) => println!("{line}"),
                }
            }
            Ok(0)
        }
        200 => {
            print!("{body}");
            Ok(0)
        }
        404 => {
            eprint!("{body}");
            Ok(1)
        }
        _ => Err(format!("the daemon answered {status}: {}", body.trim())),
    }
}
