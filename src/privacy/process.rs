//! Process hardening at start-up: no core dumps, not ptrace-able or
//! dumpable by other processes of the same user, memory locked so that
//! message and credential pages cannot be swapped to disk, and arti's
//! safe-logging switch held on for the life of the process.
//!
//! Core dumps and dumpability are not optional: if they cannot be set the
//! relay refuses to start. Locking memory depends on the host: it needs
//! `CAP_IPC_LOCK` or an unlimited `RLIMIT_MEMLOCK` (the systemd unit sets
//! `LimitMEMLOCK=infinity`). With a finite limit mailveil does not lock at
//! all, because with `MCL_FUTURE` every allocation past the limit would
//! fail and abort the process; it says so at start-up instead.

use rustix::mm::{MlockAllFlags, mlockall};
use rustix::process::{DumpableBehavior, Resource, Rlimit, getrlimit, set_dumpable_behavior};
use rustix::thread::{CapabilitySet, capabilities};

/// Why hardening failed; the relay does not start.
#[derive(Debug, thiserror::Error)]
pub enum HardeningError {
    /// `setrlimit(RLIMIT_CORE, 0)` failed.
    #[error("cannot disable core dumps: {0}")]
    CoreLimit(std::io::Error),
    /// `prctl(PR_SET_DUMPABLE, 0)` failed.
    #[error("cannot mark the process non-dumpable: {0}")]
    Dumpable(std::io::Error),
    /// Something had already switched arti's safe logging off.
    #[error("cannot enforce safe logging: {0}")]
    SafeLogging(String),
}

/// Whether memory is locked, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemoryLock {
    /// `mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)` succeeded.
    Locked,
    /// The host does not allow it: no `CAP_IPC_LOCK` and this finite
    /// `RLIMIT_MEMLOCK` (bytes).
    NotPermitted {
        /// The soft limit, in bytes.
        limit: u64,
    },
    /// `mlockall` itself failed.
    Failed(String),
}

/// What [`harden`] achieved.
#[derive(Debug)]
pub struct Hardening {
    /// Memory locking outcome.
    pub memory: MemoryLock,
    /// The open-file limit after raising the soft limit to the hard one;
    /// `None` when unlimited.
    pub descriptors: Option<u64>,
}

/// Descriptors kept for what is not a client session: listeners, the
/// reserve ones the accept loops hold for EMFILE, the runtime, the Tor
/// client's state and directory cache and its channels.
pub const DESCRIPTOR_SLACK: u64 = 128;

/// The most connections `descriptors` can carry (each relayed session
/// holds two: the client's and the provider's), or `configured` if fewer.
pub fn connection_cap(configured: usize, descriptors: Option<u64>) -> usize {
    match descriptors {
        None => configured,
        Some(n) => {
            let fit = n.saturating_sub(DESCRIPTOR_SLACK) / 2;
            configured.min(usize::try_from(fit).unwrap_or(usize::MAX).max(1))
        }
    }
}

/// Applies every hardening measure. Call once, early in `main`, before any
/// user data exists; the process stays hardened until it exits.
pub fn harden() -> Result<Hardening, HardeningError> {
    rustix::process::setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    )
    .map_err(|e| HardeningError::CoreLimit(e.into()))?;
    set_dumpable_behavior(DumpableBehavior::NotDumpable)
        .map_err(|e| HardeningError::Dumpable(e.into()))?;
    enforce_safe_logging()?;
    Ok(Hardening {
        memory: lock_memory(),
        descriptors: raise_soft_limit(Resource::Nofile),
    })
}

/// Holds arti's safe-logging guard forever, so nothing in the embedded Tor
/// client can print a value it marks sensitive.
#[cfg(feature = "tor")]
fn enforce_safe_logging() -> Result<(), HardeningError> {
    let guard =
        safelog::enforce_safe_logging().map_err(|e| HardeningError::SafeLogging(e.to_string()))?;
    // Kept for the life of the process; there is no code path that ends it.
    std::mem::forget(guard);
    Ok(())
}

#[cfg(not(feature = "tor"))]
fn enforce_safe_logging() -> Result<(), HardeningError> {
    Ok(())
}

fn lock_memory() -> MemoryLock {
    let limit = raise_soft_limit(Resource::Memlock);
    let privileged = capabilities(None)
        .map(|c| c.effective.contains(CapabilitySet::IPC_LOCK))
        .unwrap_or(false);
    if let Some(limit) = limit
        && !privileged
    {
        return MemoryLock::NotPermitted { limit };
    }
    // ONFAULT: lock pages as they are touched, so that thread stacks and
    // reserved-but-unused buffers are not made resident up front.
    let flags = MlockAllFlags::CURRENT | MlockAllFlags::FUTURE;
    match mlockall(flags | MlockAllFlags::ONFAULT).or_else(|_| mlockall(flags)) {
        Ok(()) => MemoryLock::Locked,
        Err(e) => MemoryLock::Failed(std::io::Error::from(e).to_string()),
    }
}

/// Raises a soft limit to the hard limit; returns the resulting soft limit,
/// `None` when unlimited.
fn raise_soft_limit(resource: Resource) -> Option<u64> {
    let current = getrlimit(resource);
    if current.current != current.maximum {
        let _ = rustix::process::setrlimit(
            resource,
            Rlimit {
                current: current.maximum,
                maximum: current.maximum,
            },
        );
    }
    getrlimit(resource).current
}

#[cfg(test)]
mod cap_tests {
    use super::*;

    #[test]
    fn the_connection_cap_fits_the_descriptors() {
        assert_eq!(connection_cap(1000, None), 1000);
        assert_eq!(connection_cap(1000, Some(1 << 20)), 1000);
        // The default soft limit of 1,024: (1024 - 128) / 2.
        assert_eq!(connection_cap(1000, Some(1024)), 448);
        assert_eq!(connection_cap(1000, Some(256)), 64);
        assert_eq!(connection_cap(1000, Some(10)), 1);
    }
}

#[cfg(all(test, feature = "tor"))]
mod tests {
    use super::*;

    #[test]
    fn arti_safe_logging_cannot_be_switched_off_once_enforced() {
        enforce_safe_logging().expect("enforce");
        assert!(safelog::disable_safe_logging().is_err());
        assert_eq!(
            format!("{}", safelog::Sensitive::new("alice@example.test")),
            "[scrubbed]"
        );
    }
}
