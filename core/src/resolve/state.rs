//! What the [`Resolver`](super::Resolver) keeps between events
//! (docs/ARCHITECTURE.md "The lookup coordinator"): the steps of each kind
//! of lookup in the [`Joined`](super::joined::Joined) table, and the parts
//! a request of a `dane: true` zone has so far (RFC 8461 §2). Both
//! `machine.rs` (MTA-STS) and `dane.rs` (DANE, combined requests) hold
//! them, so they sit below both.

use super::joined::Kind;
use super::{DaneAnswer, LookupId, Reason};
use crate::cache::CacheEntry;
use crate::domain::Domain;
use crate::policy::Policy;

/// Where an MTA-STS lookup is, or starts when its turn comes.
#[derive(Debug)]
pub(super) enum Stage {
    LoadingStore,
    QueryingTxt,
    Fetching { policy_id: String },
}

/// What an MTA-STS lookup has learnt so far.
#[derive(Debug)]
pub(super) struct StsSteps {
    /// A proactive refresh checks the TXT id even within `cache_grace`.
    pub(super) refresh: bool,
    pub(super) stage: Stage,
    /// The cached entry, kept for the id comparison and for fallback.
    pub(super) entry: Option<CacheEntry>,
}

/// The steps of each kind of lookup in the joined table.
#[derive(Debug)]
pub(super) enum Steps {
    Sts(StsSteps),
    /// A DANE lookup is one [`Action::LookupDane`](super::Action::LookupDane):
    /// nothing to keep.
    Dane,
}

impl super::joined::Steps for Steps {
    fn kind(&self) -> Kind {
        match self {
            Steps::Sts(_) => Kind::Sts,
            Steps::Dane => Kind::Dane,
        }
    }
}

/// A request of a `dane: true` zone and the parts it has so far.
#[derive(Debug)]
pub(super) struct Combined {
    pub(super) domain: Domain,
    /// The MTA-STS lookup it waits on, if any (left when DANE decides).
    pub(super) sts_lookup: Option<LookupId>,
    pub(super) sts: Option<(Option<Policy>, Reason)>,
    pub(super) dane: Option<DaneAnswer>,
}
