//! Keying by the client's IP address: the connection's peer, or the address a trusted proxy
//! recorded in `X-Forwarded-For` or `Forwarded`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use http::request::Parts;

use super::forwarded;
use super::{KeyExtractor, NoKey};
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
///   written by the client and are never read, so a client can neither choose its own key nor
///   lose it. Without the field the request has no key ([`NoKey::Missing`]), nor when the
///   trusted proxy wrote that it does not know or does not tell the client's address
///   (`Forwarded`'s `unknown` or an obfuscated identifier such as `_hidden`,
///   `X-Forwarded-For`'s `unknown`): the [`MissingKey`](super::MissingKey) policy applies.
///   With the field but neither at that position (fewer entries than proxies, a malformed
///   element) its key is unusable ([`NoKey::Unusable`]) and the layer refuses it.
///   `trusted_proxies = 0` reads the peer address.
///
/// IPv6 clients are keyed by their /64 by default: a single subscriber is given at least a
/// whole /64 (often a /56 or a /48) and picks addresses in it freely (SLAAC privacy
/// addresses), so keyed by full address one machine could take 2^64 fresh keys, each with a
/// full quota, and fill the limiter's key table. [`ClientIp::ipv6_prefix`] changes the
/// length (128: by full address, for networks known to give one address per client).
///
/// IPv4 clients are keyed by address, including those seen as IPv6: IPv4-mapped addresses
/// (`::ffff:192.0.2.1`, from dual-stack sockets) and the RFC 6052 well-known NAT64 prefix
/// (`64:ff9b::192.0.2.1`, `64:ff9b::/96`) count as the IPv4 address they carry. The
/// local-use NAT64 prefix `64:ff9b:1::/48` (RFC 8215) is keyed as any IPv6 address, by
/// prefix: where the IPv4 address sits in it depends on the prefix length each operator
/// picks, so it cannot be read without knowing the translator (key such traffic with
/// [`key_fn`](super::key_fn) if you do). An unspecified address (`0.0.0.0`, `::`, also after
/// that mapping) is no client's: from the peer the request has no key, from a proxy's field
/// an unusable one. Keyless requests share `0.0.0.0`.
///
/// ```
/// use http::Request;
/// use infra_ratelimit::http::{ClientIp, KeyExtractor};
/// use std::net::{IpAddr, SocketAddr};
///
/// // One proxy in front: the client is the last X-Forwarded-For entry; "6.6.6.6" is forged.
/// let client_ip = ClientIp::x_forwarded_for(1);
/// let (parts, _) = Request::get("/")
///     .header("x-forwarded-for", "6.6.6.6, 2001:db8:1:2:aaaa::1")
///     .body(())
///     .unwrap()
///     .into_parts();
/// assert_eq!(client_ip.extract(&parts), Ok("2001:db8:1:2::".parse::<IpAddr>()?));
///
/// // The connection's peer, from a SocketAddr extension.
/// let mut request = Request::get("/").body(()).unwrap();
/// request.extensions_mut().insert("192.0.2.7:51000".parse::<SocketAddr>()?);
/// let (parts, _) = request.into_parts();
/// assert_eq!(ClientIp::peer().extract(&parts), Ok("192.0.2.7".parse()?));
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
    /// 7239); the peer address when 0. Only the last `trusted_proxies` elements are read,
    /// right to left; what the client wrote left of them is never looked at.
    pub fn forwarded(trusted_proxies: usize) -> Self {
        Self::from(Source::Forwarded { trusted_proxies })
    }

    /// Keys IPv6 clients by their first `bits` bits (default 64: their /64; 128: by full
    /// address), IPv4 clients still by address.
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
        match ipv4_carried(address) {
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
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
        }
    }
}

/// The prefix a subscriber is given at the least (RFC 6177, RFC 7421).
const DEFAULT_IPV6_PREFIX: u8 = 64;

/// The RFC 6052 well-known NAT64 prefix, `64:ff9b::/96`, as the top 96 bits.
const NAT64_WELL_KNOWN: u128 = 0x0064_ff9b_0000_0000_0000_0000_0000_0000;

/// The IPv4 address an IPv6 address carries (IPv4-mapped, or behind the well-known NAT64
/// prefix), else the address itself.
fn ipv4_carried(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) if v6.to_bits() >> 32 == NAT64_WELL_KNOWN >> 32 => {
            // The low 32 bits are the IPv4 address: the truncation is the point.
            #[allow(clippy::cast_possible_truncation)]
            IpAddr::V4(Ipv4Addr::from_bits(v6.to_bits() as u32))
        }
        address => address,
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

/// A proxy recorded the unspecified address as the client's.
const UNSPECIFIED_FORWARDED: NoKey = NoKey::Unusable {
    reason: "the trusted proxy recorded the unspecified address as the client's",
};

impl KeyExtractor for ClientIp {
    type Key = IpAddr;

    fn extract(&self, request: &Parts) -> Result<IpAddr, NoKey> {
        let (address, unspecified) = match self.source {
            Source::Peer
            | Source::XForwardedFor { trusted_proxies: 0 }
            | Source::Forwarded { trusted_proxies: 0 } => {
                (peer(request).ok_or(NoKey::Missing)?, NoKey::Missing)
            }
            Source::XForwardedFor { trusted_proxies } => (
                forwarded::x_forwarded_for(&request.headers, trusted_proxies)?,
                UNSPECIFIED_FORWARDED,
            ),
            Source::Forwarded { trusted_proxies } => (
                forwarded::forwarded(&request.headers, trusted_proxies)?,
                UNSPECIFIED_FORWARDED,
            ),
        };
        self.key(address).ok_or(unspecified)
    }

    fn shared_key(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    }
}
