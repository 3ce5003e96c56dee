//! Rate limits of the public inbound path: token buckets in memory, per client address and
//! per channel for hooks, per address for survey pages. Nothing here touches the database, so
//! a limit check costs a lock and some arithmetic — the webhook path's rate is not paid for.
//! Each node keeps its own buckets; with several nodes a client gets that many times the rate,
//! which is still bounded.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config;
use crate::error::{Error, Result};

/// Buckets kept per limiter. Past this, idle (refilled) buckets are dropped; if all are busy
/// the map is cleared, which only ever errs towards letting requests through — the channel's
/// own bucket still bounds what reaches a plugin.
const MAX_BUCKETS: usize = 100_000;

/// One token bucket per key: `burst` tokens, refilled at `per_second`.
pub struct Buckets<K> {
    per_second: f64,
    burst: f64,
    map: Mutex<HashMap<K, (f64, Instant)>>,
}

impl<K: Hash + Eq> Buckets<K> {
    /// Buckets of `burst` tokens refilled at `per_second`; a rate of 0 (or less) means no limit.
    pub fn new(per_second: f64, burst: f64) -> Self {
        Buckets { per_second, burst: burst.max(1.0), map: Mutex::new(HashMap::new()) }
    }

    /// Takes a token for `key`; when there is none, how long until there is one.
    ///
    /// # Errors
    /// The time to wait.
    pub fn take(&self, key: K) -> std::result::Result<(), Duration> {
        if self.per_second <= 0.0 || !self.per_second.is_finite() {
            return Ok(());
        }
        let now = Instant::now();
        // A poisoned lock only means another request panicked mid-update: the numbers are
        // still numbers, so go on with them.
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_BUCKETS && !map.contains_key(&key) {
            let (rate, burst) = (self.per_second, self.burst);
            map.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * rate < burst);
            if map.len() >= MAX_BUCKETS {
                map.clear();
            }
        }
        let (tokens, at) = map.entry(key).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.per_second))
        }
    }
}

/// A client's key for rate limits: its IPv4 address, or the /64 network of its IPv6 address
/// (one subscriber usually holds a whole /64, so single addresses would be free to rotate).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
        v4 => v4,
    }
}

/// A trusted proxy: an address and a prefix length.
#[derive(Debug, Clone, Copy)]
struct Network(IpAddr, u8);

impl Network {
    fn parse(text: &str) -> Result<Network> {
        let bad = || {
            Error::Config(format!(
                "channels.trusted_proxies: {text:?} is not an address or a CIDR range such as 10.0.0.0/8"
            ))
        };
        let (addr, bits) = match text.trim().split_once('/') {
            Some((a, b)) => (a, Some(b.parse::<u8>().map_err(|_| bad())?)),
            None => (text.trim(), None),
        };
        let ip: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        if bits > max {
            return Err(bad());
        }
        Ok(Network(ip, bits))
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.0, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.1)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.1)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The limiters of one node.
pub struct Throttles {
    proxies: Vec<Network>,
    hook_address: Buckets<IpAddr>,
    hook_channel: Buckets<i64>,
    survey_address: Buckets<IpAddr>,
}

impl Throttles {
    /// Limiters as configured.
    ///
    /// # Errors
    /// [`Error::Config`] for a trusted proxy that is not an address or range.
    pub fn new(cfg: &config::Channels) -> Result<Self> {
        Ok(Throttles {
            proxies: cfg.trusted_proxies.iter().map(|p| Network::parse(p)).collect::<Result<_>>()?,
            hook_address: Buckets::new(cfg.hook_per_address_per_second, cfg.hook_per_address_burst),
            hook_channel: Buckets::new(cfg.hook_per_channel_per_second, cfg.hook_per_channel_burst),
            survey_address: Buckets::new(cfg.survey_per_address_per_second, cfg.survey_per_address_burst),
        })
    }

    /// The client of a request from `peer`: the peer itself, unless it is a trusted proxy —
    /// then the right-most address of `X-Forwarded-For` that is not one of ours (addresses
    /// further left were written by the client and prove nothing).
    pub fn client(&self, peer: Option<SocketAddr>, forwarded_for: Option<&str>) -> Option<IpAddr> {
        let peer = peer?.ip();
        if !self.proxies.iter().any(|n| n.contains(peer)) {
            return Some(peer);
        }
        let Some(header) = forwarded_for else {
            return Some(peer);
        };
        let mut last = peer;
        for hop in header.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) if self.proxies.iter().any(|n| n.contains(ip)) => last = ip,
                Ok(ip) => return Some(ip),
                Err(_) => return Some(last),
            }
        }
        Some(last)
    }

    /// A hook request from `client` (when known).
    ///
    /// # Errors
    /// The time to wait.
    pub fn hook_address(&self, client: Option<IpAddr>) -> std::result::Result<(), Duration> {
        client.map_or(Ok(()), |ip| self.hook_address.take(client_key(ip)))
    }

    /// A hook request to `channel`.
    ///
    /// # Errors
    /// The time to wait.
    pub fn hook_channel(&self, channel: i64) -> std::result::Result<(), Duration> {
        self.hook_channel.take(channel)
    }

    /// A survey request from `client`.
    ///
    /// # Errors
    /// The time to wait.
    pub fn survey(&self, client: Option<IpAddr>) -> std::result::Result<(), Duration> {
        client.map_or(Ok(()), |ip| self.survey_address.take(client_key(ip)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_says_how_long_to_wait() {
        let b = Buckets::new(10.0, 3.0);
        assert!((0..3).all(|_| b.take(1).is_ok()));
        let wait = b.take(1).err().unwrap_or_default();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(100), "{wait:?}");
        assert!(b.take(2).is_ok(), "another key has its own bucket");
        assert!(Buckets::new(0.0, 1.0).take(1).is_ok() && Buckets::new(0.0, 1.0).take(1).is_ok());
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let cfg = config::Channels { trusted_proxies: vec!["10.0.0.0/8".into(), "::1".into()], ..Default::default() };
        let t = match Throttles::new(&cfg) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        };
        let peer = |s: &str| s.parse::<SocketAddr>().ok();
        let ip = |s: &str| s.parse::<IpAddr>().ok();
        // A client may write anything on the left; the proxy appends the real peer.
        assert_eq!(t.client(peer("10.1.2.3:5"), Some("1.1.1.1, 203.0.113.9, 10.0.0.7")), ip("203.0.113.9"));
        assert_eq!(t.client(peer("[::1]:5"), Some("203.0.113.9")), ip("203.0.113.9"));
        assert_eq!(t.client(peer("198.51.100.4:5"), Some("203.0.113.9")), ip("198.51.100.4"));
        assert_eq!(t.client(peer("10.1.2.3:5"), None), ip("10.1.2.3"));
        assert_eq!(t.client(peer("10.1.2.3:5"), Some("garbage")), ip("10.1.2.3"));
        assert!(
            Throttles::new(&config::Channels { trusted_proxies: vec!["10.0.0.0/33".into()], ..Default::default() })
                .is_err()
        );
        assert_eq!(
            client_key("2001:db8::1".parse().unwrap_or(IpAddr::V4(0.into()))),
            "2001:db8::".parse().unwrap_or(IpAddr::V4(0.into()))
        );
    }
}
