//! mailveil: a metadata-minimizing mail relay proxy.
//!
//! A mail client submits and reads mail through mailveil instead of its
//! provider. mailveil passes the client's authentication through to the
//! provider the login routes to, relays each SMTP transaction in lock-step
//! (nothing is accepted that the provider has not accepted, nothing is
//! queued), relays IMAP sessions with targeted rewriting (capabilities, ID,
//! APPENDed headers), strips the headers that identify the person's device
//! and network, and keeps no logs about anyone.
//!
//! Data path: `server` (listen, accept) → `smtp` or `imap` (session) →
//! `login` (one policy: lockout, routing, provider verdict) → `provider`
//! (the provider's side of a session) → `egress` (how bytes leave), with
//! `sanitize` editing header blocks and `privacy` keeping values out of logs
//! and out of memory. ARCHITECTURE.md has one line per module.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![warn(missing_docs)]

pub mod access;
mod admission;
pub mod client_config;
pub mod config;
mod egress;
pub mod imap;
mod keys;
pub mod logging;
mod login;
#[cfg(feature = "tor")]
pub mod onion;
pub mod privacy;
pub mod probe;
mod provider;
pub mod proxy_protocol;
pub mod relay;
pub mod sanitize;
mod sasl;
pub mod server;
pub mod smtp;
pub mod stats;
pub mod stdout;
mod stream;
pub mod tls;
