//! The `mta-sts-query` tool's logic: one TXT lookup and policy fetch for a
//! domain, shown to a person or a script.

use super::{fetch_policy, lookup_txt, DnsClient, Runtime, Transport};
use crate::domain::normalize_key;
use crate::policy::{Mode, Policy};
use crate::resolve::TxtResult;

/// What `mta-sts-query` found (the Python tool's STSFetchResult).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryOutcome {
    /// A valid policy under TXT id `id`.
    Valid {
        /// The TXT record id.
        id: String,
        /// The validated policy.
        policy: Policy,
    },
    /// The TXT id equals the KNOWN_ID given: nothing to fetch.
    NotChanged {
        /// The TXT record id.
        id: String,
    },
    /// The domain publishes no (usable) MTA-STS TXT record.
    NoPolicy(String),
    /// DNS or HTTPS failed, or the policy is invalid.
    FetchError(String),
}

impl QueryOutcome {
    /// Exit status: 0 valid or not changed, 1 no policy, 2 fetch error.
    pub fn exit_code(&self) -> i32 {
        match self {
            QueryOutcome::Valid { .. } | QueryOutcome::NotChanged { .. } => 0,
            QueryOutcome::NoPolicy(_) => 1,
            QueryOutcome::FetchError(_) => 2,
        }
    }

    /// A form a person reads.
    pub fn to_text(&self, domain: &str) -> String {
        match self {
            QueryOutcome::Valid { id, policy } => {
                let mut s = format!(
                    "{domain}: VALID\nid: {id}\nmode: {}\nmax_age: {}\n",
                    mode_name(policy.mode),
                    policy.max_age
                );
                for mx in &policy.mx {
                    s.push_str(&format!("mx: {mx}\n"));
                }
                s
            }
            QueryOutcome::NotChanged { id } => format!("{domain}: NOT_CHANGED\nid: {id}\n"),
            QueryOutcome::NoPolicy(why) => format!("{domain}: NONE\nreason: {why}\n"),
            QueryOutcome::FetchError(why) => format!("{domain}: FETCH_ERROR\nreason: {why}\n"),
        }
    }

    /// A JSON object for scripts.
    pub fn to_json(&self, domain: &str) -> String {
        let value = match self {
            QueryOutcome::Valid { id, policy } => serde_json::json!({
                "domain": domain, "status": "VALID", "id": id,
                "policy": {"version": "STSv1", "mode": mode_name(policy.mode), "max_age": policy.max_age, "mx": policy.mx},
            }),
            QueryOutcome::NotChanged { id } => {
                serde_json::json!({"domain": domain, "status": "NOT_CHANGED", "id": id})
            }
            QueryOutcome::NoPolicy(why) => {
                serde_json::json!({"domain": domain, "status": "NONE", "reason": why})
            }
            QueryOutcome::FetchError(why) => {
                serde_json::json!({"domain": domain, "status": "FETCH_ERROR", "reason": why})
            }
        };
        value.to_string()
    }
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Enforce => "enforce",
        Mode::Testing => "testing",
        Mode::None => "none",
    }
}

/// Look `domain` up: its TXT id, then (unless it equals `known_id`) its policy.
pub async fn run_query<R: Runtime>(
    dns: &DnsClient<R>,
    transport: &dyn Transport,
    domain: &str,
    known_id: Option<&str>,
    policy_port: u16,
    user_agent: &str,
) -> QueryOutcome {
    let domain = match normalize_key(domain) {
        Ok(domain) => domain,
        Err(why) => {
            return QueryOutcome::NoPolicy(format!("not a domain name to look up ({why:?})"))
        }
    };
    let id = match lookup_txt(dns, &domain).await {
        TxtResult::Id(id) => id,
        TxtResult::NoPolicy(why) => return QueryOutcome::NoPolicy(why.to_string()),
        TxtResult::Error(why) => return QueryOutcome::FetchError(why.to_string()),
    };
    if known_id == Some(id.as_str()) {
        return QueryOutcome::NotChanged { id };
    }
    match fetch_policy(dns, transport, &domain, policy_port, user_agent).await {
        Ok(policy) => QueryOutcome::Valid { id, policy },
        Err(e) => QueryOutcome::FetchError(e.to_string()),
    }
}
