//! Keying by the client's IP address: the connection's peer, or the address a trusted proxy
//! recorded in `X-Forwarded-For` or `Forwarded`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use http::request::Parts;

use super::KeyExtractor;
use super::forwarded;
use crate::Error;

/// Where the client address is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Peer,
    XForwardedFor { trusted_proxies: usize },
    Forwarded { trusted_proxies: usize },
}

/// Keys requests by the client's IP address.
///
/// - [`ClientIp::peer`]: the address of the connection, which axum puts in the request as
///   `ConnectInfo<SocketAddr>` when served with `into_make_service_with_connect_info` (feature
///   `axum`), and which a hyper server can insert as a plain [`SocketAddr`] extension. Without
///   either, requests have no key (see [`MissingKey`](super::MissingKey)).
/// - [`ClientIp::x_forwarded_for`] and [`ClientIp::forwarded`] (RFC 7239), behind
///   `trusted_proxies` proxies: each proxy appends the address it received the request from,
///   so the client is the entry `trusted_proxies` from the right. Entries further left were
///   written by the client and are never used, so a client cannot choose its own key. With no
///   such entry (fewer entries than proxies, a malformed field, `unknown` or an obfuscated
///   identifier) the request has no key. `trusted_proxies = 0` reads the peer address.
///
/// IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`, from dual-stack sockets) count as their
/// IPv4 address. [`ClientIp::ipv6_prefix`] keys IPv6 clients by their network: a single
/// subscriber is usually given a whole /64 (often a /56 or a /48), so keyed by full address
/// one machine could take 2^64 fresh keys, each with a full quota, and fill the limiter's key
/// table. An unspecified address (`0.0.0.0`, `::`) is no client's: such a request has no
/// key, and keyless requests share `0.0.0.0`.
///
/// ```
/// use http::Request;
/// use infra_ratelimit::http::{ClientIp, KeyExtractor};
/// use std::net::{IpAddr, SocketAddr};
///
/// // One proxy in front: the client is the last X-Forwarded-For entry; "6.6.6.6" is forged.
/// let client_ip = ClientIp::x_forwarded_for(1).ipv6_prefix(64)?;
/// let (parts, _) = Request::get("/")
///     .header("x-forwarded-for", "6.6.6.6, 2001:db8:1:2:aaaa::1")
///     .body(())
///     .unwrap()
///     .into_parts();
/// assert_eq!(client_ip.extract(&parts), Some("2001:db8:1:2::".parse::<IpAddr>()?));
///
/// // The connection's peer, from a SocketAddr extension.
/// let mut request = Request::get("/").body(()).unwrap();
/// request.extensions_mut().insert("192.0.2.7:51000".parse::<SocketAddr>()?);
/// let (parts, _) = request.into_parts();
/// assert_eq!(ClientIp::peer().extract(&parts), Some("192.0.2.7".parse()?));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientIp {
    source: Source,
    ipv6_prefix: u8,
}

impl ClientIp {
    /// The connection's peer address.
    pub fn peer() -> Self {
        Self::from(Source::Peer)
    }

    /// The `X-Forwarded-For` entry `trusted_proxies` from the right (every field of that
    /// name, in order, read as one comma-separated list); the peer address when 0.
    pub fn x_forwarded_for(trusted_proxies: usize) -> Self {
        Self::from(Source::XForwardedFor { trusted_proxies })
    }

    /// The `for` parameter of the `Forwarded` element `trusted_proxies` from the right (RFC
    /// 7239); the peer address when 0. The whole field must parse: a malformed one anywhere
    /// gives no key.
    pub fn forwarded(trusted_proxies: usize) -> Self {
        Self::from(Source::Forwarded { trusted_proxies })
    }

    /// Keys IPv6 clients by their first `bits` bits (64: their /64), IPv4 clients still by
    /// address.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] unless `1 <= bits <= 128`.
    pub fn ipv6_prefix(self, bits: u8) -> Result<Self, Error> {
        if !(1..=128).contains(&bits) {
            return Err(Error::InvalidConfig {
                reason: "an IPv6 prefix length must be between 1 and 128",
            });
        }
        Ok(Self {
            ipv6_prefix: bits,
            ..self
        })
    }

    /// The key of a client at `address`; none for an unspecified address, which no client
    /// has and which IPv4's is the shared key.
    fn key(&self, address: IpAddr) -> Option<IpAddr> {
        match address.to_canonical() {
            address if address.is_unspecified() => None,
            IpAddr::V6(v6) => {
                let mask = u128::MAX << (128 - u32::from(self.ipv6_prefix));
                Some(IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & mask)))
            }
            v4 => Some(v4),
        }
    }
}

impl From<Source> for ClientIp {
    fn from(source: Source) -> Self {
        Self {
            source,
            ipv6_prefix: 128,
        }
    }
}

/// The connection's peer address: axum's `ConnectInfo<SocketAddr>`, else a `SocketAddr`.
fn peer(request: &Parts) -> Option<IpAddr> {
    #[cfg(feature = "axum")]
    if let Some(axum::extract::ConnectInfo(address)) = request
        .extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(address.ip());
    }
    request.extensions.get::<SocketAddr>().map(SocketAddr::ip)
}

impl KeyExtractor for ClientIp {
    type Key = IpAddr;

    fn extract(&self, request: &Parts) -> Option<IpAddr> {
        let address = match self.source {
            Source::Peer
            | Source::XForwardedFor { trusted_proxies: 0 }
            | Source::Forwarded { trusted_proxies: 0 } => peer(request)?,
            Source::XForwardedFor { trusted_proxies } => {
                forwarded::x_forwarded_for(&request.headers, trusted_proxies)?
            }
            Source::Forwarded { trusted_proxies } => {
                forwarded::forwarded(&request.headers, trusted_proxies)?
            }
        };
        self.key(address)
    }

    fn shared_key(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    }
}
