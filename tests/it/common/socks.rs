//! A SOCKS5 proxy (RFC 1928, username/password per RFC 1929) for tests. It
//! records every request as it arrives on the wire and connects names it
//! knows to in-process servers; it never resolves anything itself.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy was asked for, one entry per connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocksRequest {
    /// Address type as sent: 1 IPv4, 3 domain name, 4 IPv6.
    pub atyp: u8,
    /// The target host as sent (the name, or the IP in text).
    pub host: String,
    /// The target port.
    pub port: u16,
    /// RFC 1929 credentials, if the client used them.
    pub credentials: Option<(String, String)>,
}

/// A running proxy.
pub struct SocksProxy {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<SocksRequest>>>,
}

impl SocksProxy {
    pub fn requests(&self) -> Vec<SocksRequest> {
        self.requests.lock().expect("lock").clone()
    }
}

/// Starts a proxy that connects `name` (and any IP literal on loopback) to
/// `127.0.0.1:<requested port>`.
pub async fn start_socks(name: &'static str) -> SocksProxy {
    start_socks_stalling(name, None).await
}

/// As [`start_socks`], but a request for `stall` is never answered: the
/// proxy holds it silent, like a path whose packets are dropped.
pub async fn start_socks_stalling(name: &'static str, stall: Option<&'static str>) -> SocksProxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let requests = Arc::new(Mutex::new(Vec::new()));
    let log = requests.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let _ = serve(tcp, name, stall, log).await;
            });
        }
    });
    SocksProxy { addr, requests }
}

async fn serve(
    mut c: TcpStream,
    name: &str,
    stall: Option<&str>,
    log: Arc<Mutex<Vec<SocksRequest>>>,
) -> std::io::Result<()> {
    let mut head = [0u8; 2];
    c.read_exact(&mut head).await?;
    assert_eq!(head[0], 5, "SOCKS version");
    let mut methods = vec![0u8; head[1] as usize];
    c.read_exact(&mut methods).await?;
    let mut credentials = None;
    if methods.contains(&2) {
        c.write_all(&[5, 2]).await?;
        let mut ver_ulen = [0u8; 2];
        c.read_exact(&mut ver_ulen).await?;
        let mut user = vec![0u8; ver_ulen[1] as usize];
        c.read_exact(&mut user).await?;
        let plen = c.read_u8().await?;
        let mut pass = vec![0u8; plen as usize];
        c.read_exact(&mut pass).await?;
        credentials = Some((
            String::from_utf8_lossy(&user).into_owned(),
            String::from_utf8_lossy(&pass).into_owned(),
        ));
        c.write_all(&[1, 0]).await?;
    } else {
        c.write_all(&[5, 0]).await?;
    }
    let mut req = [0u8; 4];
    c.read_exact(&mut req).await?;
    assert_eq!(&req[..3], &[5, 1, 0], "CONNECT request");
    let atyp = req[3];
    let host = match atyp {
        1 => {
            let mut ip = [0u8; 4];
            c.read_exact(&mut ip).await?;
            std::net::Ipv4Addr::from(ip).to_string()
        }
        3 => {
            let len = c.read_u8().await?;
            let mut n = vec![0u8; len as usize];
            c.read_exact(&mut n).await?;
            String::from_utf8_lossy(&n).into_owned()
        }
        4 => {
            let mut ip = [0u8; 16];
            c.read_exact(&mut ip).await?;
            std::net::Ipv6Addr::from(ip).to_string()
        }
        _ => return Ok(()),
    };
    let port = c.read_u16().await?;
    log.lock().expect("lock").push(SocksRequest {
        atyp,
        host: host.clone(),
        port,
        credentials,
    });
    if stall == Some(host.as_str()) {
        // Say nothing until the relay gives up and closes.
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest).await;
        return Ok(());
    }
    let known = host == name || host == "127.0.0.1";
    let target = if known {
        TcpStream::connect(("127.0.0.1", port)).await.ok()
    } else {
        None
    };
    let Some(mut target) = target else {
        // 4: host unreachable.
        c.write_all(&[5, 4, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
        return Ok(());
    };
    c.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
    let _ = tokio::io::copy_bidirectional(&mut c, &mut target).await;
    Ok(())
}
