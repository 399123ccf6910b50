//! The `_mta-sts` TXT record grammar (RFC 8461 §3.1).
