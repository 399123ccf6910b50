//! File descriptors: the soft `RLIMIT_NOFILE` is raised to the hard limit at
//! start, and the connection and lookup bounds are fitted under it with a
//! reserve, so accepting and lookups never starve each other and a local
//! shortage never turns into a wrong answer.

use mta_sts_core::config::Limits;

/// Descriptors kept for everything else: listeners, DNS sockets (a few per
/// nameserver), cache files and connections, logs.
pub const RESERVE: usize = 64;

/// Raise the soft descriptor limit to the hard one; the limit in force.
pub fn raise_nofile() -> Option<usize> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    usize::try_from(lim.rlim_cur).ok()
}

/// Fit `limits` under `nofile` descriptors: each connection takes one, each
/// lookup about one (its policy fetch), plus [`RESERVE`]. Returns a warning
/// when they had to shrink.
pub fn fit(limits: &mut Limits, nofile: usize) -> Option<String> {
    let need = limits
        .max_connections
        .saturating_add(limits.max_lookups)
        .saturating_add(RESERVE);
    if need <= nofile {
        return None;
    }
    let available = nofile.saturating_sub(RESERVE).max(2);
    let connections = limits.max_connections.min(available / 2).max(1);
    let lookups = limits.max_lookups.min(available - connections).max(1);
    let warning = format!(
        "only {nofile} file descriptors: max_connections {} -> {connections}, max_lookups {} -> {lookups} (raise LimitNOFILE)",
        limits.max_connections, limits.max_lookups
    );
    limits.max_connections = connections;
    limits.max_lookups = lookups;
    limits.max_lookups_per_connection = limits.max_lookups_per_connection.min(lookups);
    Some(warning)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_fit_under_the_descriptor_limit() {
        let mut limits = Limits::default();
        assert_eq!(fit(&mut limits, 1_048_576), None);
        assert_eq!(limits, Limits::default());
        let warning = fit(&mut limits, 1024).expect("shrunk");
        assert!(warning.contains("1024"), "{warning}");
        assert!(limits.max_connections + limits.max_lookups + RESERVE <= 1024);
        assert!(limits.max_connections >= 400 && limits.max_lookups >= 400);
        assert!(limits.max_lookups_per_connection <= limits.max_lookups);
    }

    #[test]
    fn soft_limit_is_raised_to_the_hard_one() {
        let limit = raise_nofile().expect("getrlimit");
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: valid pointer to a local struct.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!(lim.rlim_cur, lim.rlim_max);
        assert_eq!(Some(limit), usize::try_from(lim.rlim_cur).ok());
    }
}
