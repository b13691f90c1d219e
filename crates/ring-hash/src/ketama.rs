//! [`Ketama`]: the MD5 continuum of libketama and of libmemcached's weighted ketama mode, for
//! clusters whose keys are also placed by memcached clients, or that move from them.
//!
//! The layout is documented on the type, where users of the crate read it.

use std::collections::HashSet;

use md5::{Digest, Md5};

use crate::Error;

/// Points per server at equal weights: 40 MD5 digests of four points each.
const POINTS_PER_SERVER: u32 = 160;

/// Points one digest yields.
const POINTS_PER_DIGEST: u32 = 4;

/// The most servers a continuum holds: 26,214, so that it holds at most
/// [`crate::MAX_RING_POINTS`] points.
#[allow(clippy::cast_possible_truncation)] // 26,214
pub const MAX_KETAMA_SERVERS: usize = (crate::MAX_RING_POINTS / POINTS_PER_SERVER as u64) as usize;

/// A ketama continuum over named servers.
///
/// The layout, exactly as libketama and libmemcached's weighted ketama mode build it:
///
/// * Server `i` of `n`, with weight `w` out of a total `W`, gets
///   `4 · ⌊(w / W) · 160 / 4 · n + 10⁻¹⁰⌋` points, each step computed in IEEE single precision
///   as libmemcached does. Equal weights give every server 160 points, except where the
///   rounding lands just below a whole number: 100 equal servers get 156 each, as
///   libmemcached's single-precision formula gives (libketama computes in double precision
///   and gives 160 there).
/// * Its points come from the MD5 digests of the strings `"{name}-0"`, `"{name}-1"`, …, one
///   string per four points: a 16-byte digest gives four points, its bytes `0..4`, `4..8`,
///   `8..12` and `12..16`, each read as a little-endian `u32`.
/// * A key's hash is the first four bytes of the MD5 digest of its bytes, little-endian.
/// * The key goes to the server of the first point at or after its hash; past the largest
///   point it wraps to the smallest. Equal points (MD5 gives a few in a large continuum) are
///   ordered by the server's position in the list. libmemcached's sort compares the points
///   alone and leaves equal ones in whatever order the C library's `qsort` gives (glibc's
///   merge sort keeps list order; an unstable sort need not), so a key landing exactly on
///   such a point may go to another server there.
///
/// The name is the one the other clients hash: libmemcached names a server on the default
/// port 11211 by its host alone (`"10.0.1.1"`) and any other as `"host:port"`; libketama uses
/// the address as written in its server file (`"10.0.1.1:11211"`). Pass the same string.
///
/// Unlike the [`crate::Engine`]s, keys are hashed with MD5 over their bytes, not with
/// [`StableHash`](infra_common::hash::StableHash): that is what makes the placement agree with
/// the memcached clients, and why this is a type of its own rather than an engine.
///
/// ```
/// use infra_ring_hash::Ketama;
///
/// // libmemcached's names: the host alone on port 11211.
/// let ketama = Ketama::new([("10.0.1.1", 1), ("10.0.1.2", 1), ("10.0.1.3:11212", 2)])?;
/// let server = ketama.node("user:42").expect("three servers");
/// assert!(["10.0.1.1", "10.0.1.2", "10.0.1.3:11212"].contains(server));
/// assert_eq!(ketama.points(), 2 * 120 + 240);
/// # Ok::<(), infra_ring_hash::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Ketama<N> {
    servers: Vec<N>,
    /// `(point, server index)`, sorted.
    continuum: Vec<(u32, u32)>,
}

impl<N: AsRef<str>> Ketama<N> {
    /// A continuum over `(name, weight)` pairs, in the order the other clients list them.
    ///
    /// # Errors
    ///
    /// [`Error::ZeroWeight`], [`Error::DuplicateNode`] (by name), or [`Error::TooManyNodes`]
    /// above [`MAX_KETAMA_SERVERS`] servers.
    pub fn new(servers: impl IntoIterator<Item = (N, u32)>) -> Result<Self, Error> {
        let servers: Vec<(N, u32)> = servers.into_iter().collect();
        if servers.len() > MAX_KETAMA_SERVERS {
            return Err(Error::TooManyNodes { engine: "ketama" });
        }
        let mut names = HashSet::with_capacity(servers.len());
        for (name, weight) in &servers {
            if *weight == 0 {
                return Err(Error::zero_weight(&name.as_ref()));
            }
            if !names.insert(name.as_ref()) {
                return Err(Error::duplicate(&name.as_ref()));
            }
        }
        let total: u64 = servers.iter().map(|(_, weight)| u64::from(*weight)).sum();
        let mut continuum = Vec::new();
        for (index, (name, weight)) in servers.iter().enumerate() {
            let digests = digests_for(*weight, total, servers.len());
            for digest_index in 0..digests {
                let digest = Md5::digest(format!("{}-{digest_index}", name.as_ref()));
                for point in digest.chunks_exact(4) {
                    let point = u32::from_le_bytes([point[0], point[1], point[2], point[3]]);
                    // At most MAX_KETAMA_SERVERS servers, so the index fits.
                    #[allow(clippy::cast_possible_truncation)]
                    continuum.push((point, index as u32));
                }
            }
        }
        continuum.sort_unstable();
        Ok(Self {
            servers: servers.into_iter().map(|(name, _)| name).collect(),
            continuum,
        })
    }

    /// The server that owns `key`, or `None` with no server.
    pub fn node(&self, key: impl AsRef<[u8]>) -> Option<&N> {
        self.point(key).map(|(_, server)| server)
    }

    /// The continuum point `key` lands on and its server, or `None` with no server.
    ///
    /// ```
    /// use infra_ring_hash::Ketama;
    ///
    /// let ketama = Ketama::new([("a", 1), ("b", 1)])?;
    /// let (point, server) = ketama.point("user:42").unwrap();
    /// assert!(point >= Ketama::<&str>::key_hash("user:42") || point == ketama.smallest_point().unwrap());
    /// assert_eq!(ketama.node("user:42"), Some(server));
    /// # Ok::<(), infra_ring_hash::Error>(())
    /// ```
    pub fn point(&self, key: impl AsRef<[u8]>) -> Option<(u32, &N)> {
        let hash = Self::key_hash(key);
        let at = self.continuum.partition_point(|&(point, _)| point < hash);
        let &(point, index) = self.continuum.get(at).or_else(|| self.continuum.first())?;
        Some((point, &self.servers[index as usize]))
    }

    /// A key's ketama hash: the first four bytes of its MD5 digest, little-endian.
    ///
    /// ```
    /// use infra_ring_hash::Ketama;
    ///
    /// // MD5("") = d41d8cd98f00b204e9800998ecf8427e
    /// assert_eq!(Ketama::<&str>::key_hash(""), 0xd98c1dd4);
    /// ```
    pub fn key_hash(key: impl AsRef<[u8]>) -> u32 {
        let digest = Md5::digest(key.as_ref());
        u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]])
    }

    /// The smallest point on the continuum, where keys past the largest wrap to.
    pub fn smallest_point(&self) -> Option<u32> {
        self.continuum.first().map(|&(point, _)| point)
    }

    /// Points on the continuum, over all servers.
    pub fn points(&self) -> usize {
        self.continuum.len()
    }

    /// The servers, in the order given.
    pub fn servers(&self) -> &[N] {
        &self.servers
    }
}

/// Digests (of four points each) for a server of `weight` out of `total` among `servers`:
/// `⌊pct · 160 / 4 · servers + 10⁻¹⁰⌋` with every operation in `f32`, as libmemcached computes
/// it, so that rounding at the edges agrees too.
#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]
fn digests_for(weight: u32, total: u64, servers: usize) -> u32 {
    let pct = weight as f32 / total as f32;
    let per_digest = POINTS_PER_SERVER as f32 * pct / POINTS_PER_DIGEST as f32;
    // Non-negative and at most 40 · servers (pct <= 1), so the conversion is exact.
    (per_digest * servers as f32 + 1e-10_f32).floor() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected counts worked out by hand in single precision: `1/100` rounds to just below
    /// 0.01, so 100 servers get 39 digests, not 40.
    #[test]
    fn equal_weights_give_160_points_each_but_for_single_precision_rounding() {
        for (servers, points_each) in [
            (1usize, 160),
            (2, 160),
            (3, 160),
            (7, 160),
            (10, 160),
            (100, 156),
            (1000, 160),
        ] {
            let names: Vec<String> = (0..servers)
                .map(|i| format!("10.0.{}.{}", i / 256, i % 256))
                .collect();
            let ketama = Ketama::new(names.iter().map(|name| (name.as_str(), 1))).unwrap();
            assert_eq!(ketama.points(), points_each * servers, "{servers} servers");
        }
    }

    #[test]
    fn bad_server_lists_are_refused() {
        assert_eq!(
            Ketama::new([("a", 1), ("b", 0)]).unwrap_err(),
            Error::ZeroWeight {
                node: "\"b\"".into()
            }
        );
        assert_eq!(
            Ketama::new([("a", 1), ("a", 2)]).unwrap_err(),
            Error::DuplicateNode {
                node: "\"a\"".into()
            }
        );
        let many = (0..=MAX_KETAMA_SERVERS).map(|i| (i.to_string(), 1));
        assert_eq!(
            Ketama::new(many).unwrap_err(),
            Error::TooManyNodes { engine: "ketama" }
        );
        let empty = Ketama::<&str>::new([]).unwrap();
        assert_eq!(empty.node("key"), None);
        assert_eq!(empty.points(), 0);
    }
}
