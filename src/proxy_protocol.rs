//! The PROXY protocol, version 2 (HAProxy's `send-proxy-v2`), on listeners
//! with `proxy_protocol = true`: the load balancer in front says, in a
//! binary header before anything else, which address the client connected
//! from. That address is then admitted exactly as a direct peer's would be
//! (hashed into its prefix tags and dropped).
//!
//! Only peers in `proxy_from` may send the header; a connection from any
//! other address is closed before a byte is read. A connection whose first
//! bytes are not a well-formed version 2 header (version 1's text form
//! included) is closed. A `LOCAL` header (the load balancer's own health
//! check) stands for the load balancer itself, as the specification says.
//! The header's TLVs (ALPN, SNI, the balancer's TLS details) are skipped
//! unread: the relay does its own TLS.
//!
//! Reads exactly the header's bytes, so that what follows (a TLS
//! ClientHello, or nothing before the relay's greeting) stays in the socket.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tokio::io::{AsyncRead, AsyncReadExt};

/// The 12 bytes every version 2 header starts with.
const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The most header this relay reads after the fixed 16 bytes: addresses
/// (36 bytes for IPv6) and the TLVs HAProxy may add. A longer header is
/// refused rather than read.
const MAX_BODY: usize = 512;

/// Why a header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The connection ended or failed before a whole header came.
    #[error("connection ended before a whole PROXY header")]
    Truncated,
    /// Not a PROXY version 2 header.
    #[error("not a PROXY protocol version 2 header")]
    NotV2,
    /// A version 2 header that breaks the specification, or one this relay
    /// does not take (a family other than TCP over IPv4 or IPv6, a body
    /// longer than it reads).
    #[error("PROXY header not usable: {0}")]
    Unusable(&'static str),
}

/// What a header says about the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A client connected from this address, through the load balancer.
    Client(IpAddr),
    /// The load balancer's own connection (`LOCAL`: a health check).
    Local,
}

/// Reads one version 2 header from `io`, exactly its bytes.
pub async fn read_header<S: AsyncRead + Unpin>(io: &mut S) -> Result<Source, ProxyError> {
    let mut fixed = [0u8; 16];
    io.read_exact(&mut fixed)
        .await
        .map_err(|_| ProxyError::Truncated)?;
    if fixed[..12] != SIGNATURE {
        return Err(ProxyError::NotV2);
    }
    let (version, command) = (fixed[12] >> 4, fixed[12] & 0x0f);
    if version != 2 {
        return Err(ProxyError::NotV2);
    }
    let family = fixed[13];
    let len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if len > MAX_BODY {
        return Err(ProxyError::Unusable("header longer than 512 bytes"));
    }
    let mut body = [0u8; MAX_BODY];
    let body = &mut body[..len];
    io.read_exact(body)
        .await
        .map_err(|_| ProxyError::Truncated)?;
    parse_body(command, family, body)
}

/// The header after its 16 fixed bytes.
fn parse_body(command: u8, family: u8, body: &[u8]) -> Result<Source, ProxyError> {
    match command {
        // LOCAL: the addresses, if any, are to be ignored.
        0x0 => return Ok(Source::Local),
        0x1 => {}
        _ => return Err(ProxyError::Unusable("unknown command")),
    }
    // Family high nibble: 1 IPv4, 2 IPv6; low nibble: 1 stream (TCP).
    match family {
        0x11 if body.len() >= 12 => {
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            Ok(Source::Client(IpAddr::V4(ip)))
        }
        0x21 if body.len() >= 36 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&body[..16]);
            // An IPv4 client seen by an IPv6 socket: admitted as IPv4.
            Ok(Source::Client(
                IpAddr::V6(Ipv6Addr::from(octets)).to_canonical(),
            ))
        }
        0x11 | 0x21 => Err(ProxyError::Unusable("addresses cut short")),
        _ => Err(ProxyError::Unusable("not TCP over IPv4 or IPv6")),
    }
}

/// An address or a network (`IP/len`) allowed to send PROXY headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    len: u8,
}

impl Network {
    /// `"10.0.0.5"`, `"10.0.0.0/24"`, `"::1"`, `"fd00::/8"`.
    pub fn parse(text: &str) -> Option<Self> {
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a.parse::<IpAddr>().ok()?, l.parse::<u8>().ok()?),
            None => {
                let addr = text.parse::<IpAddr>().ok()?;
                (addr, if addr.is_ipv4() { 32 } else { 128 })
            }
        };
        // An IPv4-mapped entry stands for its IPv4 address (peers are
        // compared that way).
        let (addr, len) = match addr.to_canonical() {
            IpAddr::V4(v4) if addr.is_ipv6() => (IpAddr::V4(v4), len.checked_sub(96)?),
            other => (other, len),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        // A network of length 0 is everyone: anyone could name any address
        // and skip every per-network limit.
        (len <= max && len > 0).then_some(Network { addr, len })
    }

    /// True when `ip` is in this network (an IPv4-mapped IPv6 address as
    /// its IPv4 one).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.len),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.len),
            _ => false,
        }
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// True when the first `len` bits of `a` and `b` are equal.
fn prefix_eq(a: &[u8], b: &[u8], len: u8) -> bool {
    let (whole, rest) = (usize::from(len / 8), len % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    rest == 0 || (a[whole] ^ b[whole]) >> (8 - rest) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header as HAProxy writes it: TCP over IPv4 from 192.0.2.7:5555
    /// to 198.51.100.1:993, with an ALPN TLV (type 0x01) behind.
    fn haproxy_v4() -> Vec<u8> {
        let mut h = SIGNATURE.to_vec();
        h.extend([0x21, 0x11]);
        let tlv = [0x01, 0x00, 0x04, b'i', b'm', b'a', b'p'];
        h.extend(u16::try_from(12 + tlv.len()).unwrap().to_be_bytes());
        h.extend([192, 0, 2, 7, 198, 51, 100, 1]);
        h.extend(5555u16.to_be_bytes());
        h.extend(993u16.to_be_bytes());
        h.extend(tlv);
        h
    }

    async fn read(bytes: &[u8]) -> (Result<Source, ProxyError>, Vec<u8>) {
        let mut io = bytes;
        let got = read_header(&mut io).await;
        (got, io.to_vec())
    }

    #[tokio::test]
    async fn reads_exactly_the_header_and_gives_the_client_address() {
        let mut bytes = haproxy_v4();
        bytes.extend(b"\x16\x03\x01 then TLS");
        let (got, left) = read(&bytes).await;
        assert_eq!(got, Ok(Source::Client("192.0.2.7".parse().unwrap())));
        assert_eq!(left, b"\x16\x03\x01 then TLS");
    }

    #[tokio::test]
    async fn ipv6_and_ipv4_mapped_sources() {
        for (source, expected) in [
            ("2001:db8::42", "2001:db8::42"),
            ("::ffff:192.0.2.9", "192.0.2.9"),
        ] {
            let mut h = SIGNATURE.to_vec();
            h.extend([0x21, 0x21, 0x00, 36]);
            h.extend(source.parse::<Ipv6Addr>().unwrap().octets());
            h.extend(Ipv6Addr::LOCALHOST.octets());
            h.extend([0, 1, 0, 2]);
            let (got, left) = read(&h).await;
            assert_eq!(got, Ok(Source::Client(expected.parse().unwrap())));
            assert!(left.is_empty());
        }
    }

    #[tokio::test]
    async fn local_is_the_balancer_itself() {
        let mut h = SIGNATURE.to_vec();
        h.extend([0x20, 0x00, 0x00, 0x00]);
        assert_eq!(read(&h).await.0, Ok(Source::Local));
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        let v1 = b"PROXY TCP4 192.0.2.7 198.51.100.1 5555 993\r\n";
        assert_eq!(read(v1).await.0, Err(ProxyError::NotV2));
        // A TLS ClientHello (a client skipping the balancer).
        assert_eq!(
            read(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03aaaaaaaaaaaa")
                .await
                .0,
            Err(ProxyError::NotV2)
        );
        assert_eq!(read(b"EHLO x\r\n").await.0, Err(ProxyError::Truncated));
        let mut h = haproxy_v4();
        h[12] = 0x11; // version 1 in binary form
        assert_eq!(read(&h).await.0, Err(ProxyError::NotV2));
        let mut h = haproxy_v4();
        h[12] = 0x22; // unknown command
        assert!(matches!(read(&h).await.0, Err(ProxyError::Unusable(_))));
        let mut h = haproxy_v4();
        h[13] = 0x12; // UDP
        assert!(matches!(read(&h).await.0, Err(ProxyError::Unusable(_))));
        let mut h = haproxy_v4();
        h[13] = 0x00; // UNSPEC with PROXY: no address to admit
        assert!(matches!(read(&h).await.0, Err(ProxyError::Unusable(_))));
        let mut h = SIGNATURE.to_vec();
        h.extend([0x21, 0x11, 0x00, 0x04, 1, 2, 3, 4]);
        assert_eq!(
            read(&h).await.0,
            Err(ProxyError::Unusable("addresses cut short"))
        );
        let mut h = SIGNATURE.to_vec();
        h.extend([0x21, 0x11, 0x02, 0x01]);
        h.extend([0u8; 513]);
        assert!(matches!(read(&h).await.0, Err(ProxyError::Unusable(_))));
        let h = haproxy_v4();
        assert_eq!(read(&h[..20]).await.0, Err(ProxyError::Truncated));
    }

    #[test]
    fn networks() {
        let n = Network::parse("10.1.0.0/16").unwrap();
        assert!(n.contains("10.1.255.3".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.0.1".parse().unwrap()));
        assert!(!n.contains("10.2.0.1".parse().unwrap()));
        assert!(!n.contains("::1".parse().unwrap()));
        let one = Network::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let v6 = Network::parse("fd00:ab::/33").unwrap();
        assert!(v6.contains("fd00:ab:7fff::1".parse().unwrap()));
        assert!(!v6.contains("fd00:ab:8000::1".parse().unwrap()));
        let mapped = Network::parse("::ffff:10.0.0.5").unwrap();
        assert_eq!(mapped, Network::parse("10.0.0.5").unwrap());
        assert!(mapped.contains("10.0.0.5".parse().unwrap()));
        assert_eq!(
            Network::parse("::ffff:10.0.0.0/120"),
            Network::parse("10.0.0.0/24")
        );
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "host.example",
            "10.0.0.0/",
            "10/8",
            "0.0.0.0/0",
            "::/0",
        ] {
            assert_eq!(Network::parse(bad), None, "{bad}");
        }
        assert_eq!(n.to_string(), "10.1.0.0/16");
    }
}
