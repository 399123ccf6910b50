//! The `mta-sts-query` tool's logic: one TXT lookup and policy fetch for a
//! domain, shown to a person or a script; with DANE (RFC 7672), the DANE
//! status of each MX host and the answer the daemon would give (RFC 8461
//! §2: DANE first).

use std::sync::Arc;

use super::answer::render;
use super::{fetch_policy, lookup_txt, DnsClient, Runtime, Transport};
use crate::dane::{DaneResult, DnssecCheck, Verdict};
use crate::domain::{normalize_key, Domain};
use crate::policy::{render_reply, Mode, Policy, ReplyOptions};
use crate::resolve::{dane_class, Class, TxtResult};

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
        self.json_value(domain).to_string()
    }

    fn json_value(&self, domain: &str) -> serde_json::Value {
        match self {
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
        }
    }
}

/// What `mta-sts-query` found with DANE on: the MTA-STS outcome, the DANE
/// result (RFC 7672 §2.2) and the reply a `dane: true` zone with `opts`
/// would give (RFC 8461 §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaneQuery {
    /// The MTA-STS side.
    pub sts: QueryOutcome,
    /// The DANE side.
    pub dane: DaneResult,
    /// The zone's reply options, for the MTA-STS answer.
    pub opts: ReplyOptions,
    /// Whether the resolver the DANE answer rests on validates
    /// (docs/ARCHITECTURE.md "Operations", the DNSSEC self-check).
    pub dnssec: DnssecCheck,
}

impl DaneQuery {
    /// The socketmap reply the daemon would give (`OK dane-only`,
    /// `NOTFOUND `, `TEMP ...`, `OK secure match=...`), or `None` when
    /// the MTA-STS side is not known (NOT_CHANGED).
    pub fn answer(&self, domain: &str) -> Option<String> {
        let class = match dane_class(&self.dane.verdict) {
            Some(class) => class,
            None => match &self.sts {
                QueryOutcome::Valid { policy, .. } => Class::Policy(policy),
                QueryOutcome::NoPolicy(_) | QueryOutcome::FetchError(_) => Class::NoPolicy,
                QueryOutcome::NotChanged { .. } => return None,
            },
        };
        // Rendered as the daemon renders it (one implementation), for the
        // key the daemon would look up: `policy_domain` is its A-label form.
        let key = normalize_key(domain);
        let domain = key.as_ref().map_or(domain, Domain::as_str);
        let reply = |policy: &Policy| render_reply(policy, domain, self.opts).map(Arc::from);
        let (reply, _) = render(domain, class, reply);
        Some(String::from_utf8_lossy(&reply.payload()).into_owned())
    }

    /// Exit status: 0 for a DANE answer (`dane-only`, `dane`), 1 for a
    /// null MX, 2 when the DANE lookup failed, else the MTA-STS status.
    pub fn exit_code(&self) -> i32 {
        match &self.dane.verdict {
            Verdict::DaneOnly | Verdict::Dane => 0,
            Verdict::NullMx => 1,
            Verdict::Temp(_) => 2,
            Verdict::NoDane(_) => self.sts.exit_code(),
        }
    }

    /// A form a person reads: the MTA-STS report, then `dane:` with the
    /// outcome, one `dane_host:` line per MX host, `dnssec:` (is the
    /// resolver validating?) and `answer:`.
    pub fn to_text(&self, domain: &str) -> String {
        let mut s = self.sts.to_text(domain);
        s.push_str(&format!(
            "dane: {}
",
            self.dane.verdict.label()
        ));
        s.push_str(&format!(
            "dane_reason: {}
",
            self.dane
        ));
        for host in &self.dane.hosts {
            s.push_str(&format!(
                "dane_host: {host}
"
            ));
        }
        s.push_str(&format!(
            "dnssec: {} ({})\n",
            self.dnssec.label(),
            self.dnssec
        ));
        if let Some(answer) = self.answer(domain) {
            s.push_str(&format!(
                "answer: {}
",
                answer.trim_end()
            ));
        }
        s
    }

    /// The MTA-STS JSON object with `dane` (outcome, reason, TTL, hosts),
    /// `dnssec` (status, validating, detail) and `answer` added.
    pub fn to_json(&self, domain: &str) -> String {
        let mut value = self.sts.json_value(domain);
        let hosts: Vec<serde_json::Value> = self
            .dane
            .hosts
            .iter()
            .map(|h| {
                serde_json::json!({
                    "host": h.host, "status": h.dane.label(), "detail": h.dane.to_string(),
                })
            })
            .collect();
        if let Some(object) = value.as_object_mut() {
            object.insert(
                "dane".to_owned(),
                serde_json::json!({
                    "outcome": self.dane.verdict.label(),
                    "reason": self.dane.to_string(),
                    "implicit_mx": self.dane.implicit_mx,
                    "ttl": self.dane.ttl.as_secs(),
                    "hosts": hosts,
                }),
            );
            object.insert(
                "dnssec".to_owned(),
                serde_json::json!({
                    "status": self.dnssec.label(),
                    "validating": self.dnssec.is_validating(),
                    "detail": self.dnssec.to_string(),
                }),
            );
            object.insert(
                "answer".to_owned(),
                self.answer(domain)
                    .map_or(serde_json::Value::Null, Into::into),
            );
        }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::dane::NoDane;
    use crate::policy::parse_policy;

    /// The answer shown is the daemon's for the same key: a U-label or
    /// upper-case domain typed by a person becomes the A-label
    /// `policy_domain` (RFC 8460 §4.4, docs/ARCHITECTURE.md "Replies").
    #[test]
    fn answer_names_the_a_label_domain() {
        let policy =
            parse_policy(b"version: STSv1\nmode: enforce\nmx: mx.example\nmax_age: 60\n").unwrap();
        let report = DaneQuery {
            sts: QueryOutcome::Valid {
                id: "1".into(),
                policy,
            },
            dane: DaneResult::decided(Verdict::NoDane(NoDane::NoTlsa), Duration::from_secs(60)),
            dnssec: DnssecCheck::Validating { test_name: None },
            opts: ReplyOptions {
                strict_testing: false,
                require_sni: false,
                tlsrpt: true,
            },
        };
        let answer = report.answer("Bücher.Example.").unwrap();
        assert!(
            answer.starts_with(
                "OK secure match=mx.example policy_type=sts \
                 policy_domain=xn--bcher-kva.example mx_host_pattern=mx.example "
            ),
            "{answer}"
        );
    }
}
