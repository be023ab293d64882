//! SMTP command lines as the session core takes them: a [`Line`] as read
//! (complete, or not a proper line), and a [`Parsed`] command whose owned
//! strings — addresses, the EHLO name, a SASL response — are wiped when it
//! is dropped. Parsing itself is smtp-proto's.

use std::borrow::Cow;

use smtp_proto::Request;
use zeroize::Zeroize;

use crate::privacy::WipedBuf;

/// A command line as read from the client.
pub(crate) enum Line {
    /// A complete CRLF-terminated line.
    Complete(WipedBuf),
    /// A line ending in a bare LF.
    BareLf,
    /// A line over the limit (the session ends).
    TooLong,
}

/// A parsed command whose owned strings (addresses, EHLO name, SASL
/// response) are wiped when it is dropped.
pub(crate) struct Parsed<'a>(pub(crate) Request<Cow<'a, str>>);

/// Parses a command line (CRLF included).
pub(crate) fn parse(line: &[u8]) -> Result<Parsed<'_>, smtp_proto::Error> {
    Request::parse(&mut line.iter()).map(Parsed)
}

impl Drop for Parsed<'_> {
    fn drop(&mut self) {
        fn wipe(value: &mut Cow<'_, str>) {
            if let Cow::Owned(s) = value {
                s.zeroize();
            }
        }
        match &mut self.0 {
            Request::Ehlo { host } | Request::Lhlo { host } | Request::Helo { host } => wipe(host),
            Request::Mail { from } => {
                wipe(&mut from.address);
                for v in [
                    &mut from.trans_id,
                    &mut from.env_id,
                    &mut from.solicit,
                    &mut from.auth,
                ]
                .into_iter()
                .flatten()
                {
                    wipe(v);
                }
                if let Some(mtrk) = &mut from.mtrk {
                    wipe(&mut mtrk.certifier);
                }
            }
            Request::Rcpt { to } => {
                wipe(&mut to.address);
                if let Some(orcpt) = &mut to.orcpt {
                    wipe(orcpt);
                }
            }
            Request::Auth {
                initial_response, ..
            } => wipe(initial_response),
            Request::Noop { value }
            | Request::Vrfy { value }
            | Request::Expn { value }
            | Request::Help { value }
            | Request::Etrn { name: value }
            | Request::Burl { uri: value, .. } => wipe(value),
            Request::Atrn { domains } => domains.iter_mut().for_each(wipe),
            Request::Bdat { .. }
            | Request::StartTls
            | Request::Data
            | Request::Rset
            | Request::Quit => {}
        }
    }
}

/// The size token of a BDAT command line (digits, possibly none), if the
/// line is a BDAT command.
pub(crate) fn bdat_size_token(line: &[u8]) -> Option<&[u8]> {
    let verb = line.get(..5)?;
    if !verb.eq_ignore_ascii_case(b"BDAT ") {
        return None;
    }
    let rest = line[5..].trim_ascii_start();
    let end = rest
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(rest.len());
    Some(&rest[..end])
}
