//! The hermetic integration tests, in one binary (one link instead of
//! nine): the relay in-process, its peers — scripted providers, a SOCKS5
//! proxy, byte-level clients — over real TCP and TLS on 127.0.0.1.

mod common;

mod access;
mod admission;
mod cli;
mod egress;
mod endpoints;
mod hostile_input;
mod imap_relay;
mod listeners;
mod no_leaks;
mod sanitize_props;
mod session_ends;
mod smtp_relay;
mod tls_reload;
