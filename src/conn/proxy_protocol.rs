//! The PROXY protocol (HAProxy's, v1 text and v2 binary) on the plain-HTTP listener, for load
//! balancers that pass the client's address that way (`listen_proxy_protocol: true`).
//!
//! Only a connection from a `trusted_proxies` peer is read for a header, and it must start
//! with one: a trusted peer without a valid header within `limits.header_timeout` is closed.
//! Its source address then stands for the client everywhere (the connection's peer address as
//! pingora reports it: allowlists, anonymous budgets, connection caps, the audit line,
//! `X-Forwarded-For` to the upstream, whoami). A v2 `LOCAL` command (the balancer's own health
//! check) and a v1 `UNKNOWN` or v2 unspecified/UNIX family keep the peer's address. From any
//! other peer nothing is read here: a PROXY header it sends is an invalid request line, which
//! pingora answers 400.
//!
//! Parsing is the `ppp` crate's; this file bounds it: at most [`MAX_HEADER`] bytes (a v1
//! header is at most 107; a v2 header with the TLVs load balancers add stays far below), and
//! the header deadline. Bytes read past the header are the start of the first request.

use std::net::SocketAddr;

use bytes::BytesMut;
use ppp::v1;
use ppp::v2;
use ppp::{HeaderResult, PartialResult};
use tokio::io::AsyncReadExt;

use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::protocols::{SocketDigest, Stream};

/// The longest v1 header the protocol allows.
const V1_MAX: usize = 107;

/// The longest PROXY header accepted, TLVs included.
pub const MAX_HEADER: usize = 4096;

/// Why a trusted peer's connection was closed without a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// The peer closed, or reading failed.
    Closed,
    /// No complete header within the deadline.
    TimedOut,
    /// Not a PROXY header (or a malformed one).
    Invalid,
    /// Longer than [`MAX_HEADER`].
    TooLong,
}

impl HeaderError {
    /// For log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            HeaderError::Closed => "closed before a PROXY header",
            HeaderError::TimedOut => "no PROXY header within header_timeout",
            HeaderError::Invalid => "not a valid PROXY header",
            HeaderError::TooLong => "PROXY header too long",
        }
    }
}

/// What a complete header says: the client's address (`None`: keep the peer's), and how many
/// bytes it took.
fn parse(buf: &[u8]) -> Result<Option<(Option<SocketAddr>, usize)>, HeaderError> {
    // ppp 2.3 calls a v1 line cut right after its last space terminal (an empty destination
    // port), and a whole line missing fields incomplete, so a v1 header is judged only once
    // its line has ended (or passed the 107 bytes the protocol allows it), and then is either
    // whole or invalid.
    let v1 = buf.first() == Some(&b'P');
    if v1 && !buf.contains(&b'\n') && buf.len() <= V1_MAX {
        return Ok(None);
    }
    let result = HeaderResult::parse(buf);
    if result.is_incomplete() {
        return if v1 {
            Err(HeaderError::Invalid)
        } else {
            Ok(None)
        };
    }
    match result {
        HeaderResult::V1(Ok(h)) => {
            let source = match h.addresses {
                v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v1::Addresses::Unknown => None,
            };
            Ok(Some((source, h.header.len())))
        }
        HeaderResult::V2(Ok(h)) => {
            let source = match (h.command, h.addresses) {
                (v2::Command::Local, _) => None,
                (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                (v2::Command::Proxy, _) => None,
            };
            Ok(Some((source, h.len())))
        }
        HeaderResult::V1(Err(_)) | HeaderResult::V2(Err(_)) => Err(HeaderError::Invalid),
    }
}

/// Reads the PROXY header at the start of `stream` by `deadline`. Returns the client's
/// address (`None`: keep the peer's) and the bytes read past the header.
pub async fn read_header(
    stream: &mut Stream,
    deadline: tokio::time::Instant,
) -> Result<(Option<SocketAddr>, BytesMut), HeaderError> {
    let mut buf = BytesMut::with_capacity(512);
    loop {
        if buf.capacity() - buf.len() < 256 {
            buf.reserve(512);
        }
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Err(HeaderError::Closed),
            Ok(Ok(_)) => {}
            Err(_) => return Err(HeaderError::TimedOut),
        }
        let window = &buf[..buf.len().min(MAX_HEADER)];
        match parse(window)? {
            Some((source, len)) => {
                let rest = buf.split_off(len);
                return Ok((source, rest));
            }
            None if buf.len() >= MAX_HEADER => return Err(HeaderError::TooLong),
            None => {}
        }
    }
}

/// Makes `client` the connection's peer address, as pingora (and so the proxy) reads it.
pub fn set_client(stream: &mut Stream, client: SocketAddr) {
    let digest = SocketDigest::from_raw_fd(stream.id());
    let _ = digest.peer_addr.set(Some(PingoraAddr::Inet(client)));
    if let Some(local) = stream
        .get_socket_digest()
        .and_then(|d| d.local_addr().cloned())
    {
        let _ = digest.local_addr.set(Some(local));
    }
    stream.set_socket_digest(digest);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
        h.extend_from_slice(addresses);
        h
    }

    #[test]
    fn v1_and_v2_headers() {
        let text = b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 8080\r\nGET / HTTP/1.1\r\n";
        let (source, len) = parse(text).unwrap().unwrap();
        assert_eq!(source, Some("203.0.113.7:51000".parse().unwrap()));
        assert_eq!(&text[len..], b"GET / HTTP/1.1\r\n");
        let text = b"PROXY TCP6 2001:db8::7 2001:db8::1 51000 8080\r\n";
        assert_eq!(
            parse(text).unwrap().unwrap().0,
            Some("[2001:db8::7]:51000".parse().unwrap())
        );
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").unwrap().unwrap().0, None);

        let mut addrs = vec![198, 51, 100, 9, 10, 0, 0, 1];
        addrs.extend_from_slice(&40000u16.to_be_bytes());
        addrs.extend_from_slice(&8080u16.to_be_bytes());
        let mut bin = v2(1, 0x11, &addrs);
        let header_len = bin.len();
        bin.extend_from_slice(b"GET /");
        let (source, len) = parse(&bin).unwrap().unwrap();
        assert_eq!(source, Some("198.51.100.9:40000".parse().unwrap()));
        assert_eq!(len, header_len);
        // LOCAL: the balancer's own connection, the peer's address stays.
        assert_eq!(parse(&v2(0, 0x00, &[])).unwrap().unwrap().0, None);
        let mut six = Vec::new();
        six.extend_from_slice(
            &"2001:db8::9"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        six.extend_from_slice(
            &"2001:db8::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        six.extend_from_slice(&[0x9c, 0x40, 0x1f, 0x90]);
        assert_eq!(
            parse(&v2(1, 0x21, &six)).unwrap().unwrap().0,
            Some("[2001:db8::9]:40000".parse().unwrap())
        );
    }

    #[test]
    fn partial_and_invalid_headers() {
        let full = b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 8080\r\n";
        for cut in 1..full.len() {
            assert_eq!(parse(&full[..cut]), Ok(None), "cut {cut}");
        }
        let bin = v2(1, 0x11, &[198, 51, 100, 9, 10, 0, 0, 1, 0, 1, 0, 2]);
        for cut in 1..bin.len() {
            assert_eq!(parse(&bin[..cut]), Ok(None), "v2 cut {cut}");
        }
        for bad in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"PROXY TCP4 nonsense\r\n",
            b"PROXY TCP4 203.0.113.7 10.0.0.1 99999 8080\r\n",
            b"PROXY TCP9 203.0.113.7 10.0.0.1 1 2\r\n",
        ] {
            assert_eq!(parse(bad), Err(HeaderError::Invalid), "{bad:?}");
        }
        assert_eq!(
            parse(&v2(5, 0x11, &[0; 12])),
            Err(HeaderError::Invalid),
            "unknown command"
        );
        // A v1 line never ending is refused by length, not read forever.
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat();
        assert_eq!(parse(&long), Err(HeaderError::Invalid));
    }
}
