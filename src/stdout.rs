//! Standard output for the one-shot commands (`check`, `client-config`,
//! `onion-key`, `access add`).
//!
//! `println!` panics when the reader has gone (`mailveil check | grep -q`,
//! `| head`). Here a reader that stopped reading ends the process quietly
//! with status 141, as SIGPIPE ends a C program: never 0, so a `check` cut
//! short is never taken for "configuration OK".

use std::fmt;
use std::io::{ErrorKind, Write};

/// The status a shell reports for a process that SIGPIPE ended (128 + 13).
const BROKEN_PIPE_STATUS: i32 = 141;

/// Writes `args` to standard output and flushes it.
pub fn print(args: fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if e.kind() == ErrorKind::BrokenPipe {
            std::process::exit(BROKEN_PIPE_STATUS);
        }
        eprintln!("mailveil: writing to standard output: {e}");
        std::process::exit(1);
    }
}

/// `print!` that ends the process quietly when the reader has gone.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::stdout::print(format_args!($($arg)*)) };
}

/// `println!` that ends the process quietly when the reader has gone.
#[macro_export]
macro_rules! outln {
    () => { $crate::stdout::print(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::stdout::print(format_args!("{}\n", format_args!($($arg)*))) };
}
