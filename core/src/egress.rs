//! Where the server may connect to: every outbound connection made on behalf of a workspace
//! (webhooks, plugins' HTTP and TCP) is refused to loopback, private, link-local, shared,
//! multicast and other non-public addresses unless the operator allows them in `plugdesk.toml`
//! (`[network] allow`). A workspace admin can name any URL or grant any host; only the operator
//! decides which internal addresses are reachable.
//!
//! The check is made on the address actually connected to, after resolution: a name that
//! resolves to `127.0.0.1` (or is re-pointed there after it was saved, DNS rebinding) is
//! refused like the literal. Two enforcement points: [`Resolver`], installed on every reqwest
//! client that workspaces steer, and [`Policy::connect_tcp`] for plugins' raw TCP. IP-literal
//! URLs never reach a resolver, so [`Policy::check_url`] runs before each HTTP request too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};

/// How every refusal starts.
const REFUSED: &str = "outbound connections to";

/// One entry of `[network] allow`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Allow {
    /// An address range, `10.1.2.0/24`; a bare address is a /32 or /128.
    Net { addr: IpAddr, prefix: u8 },
    /// A host name (or literal) as it is written in the URL or grant, with an optional port.
    Host { host: String, port: Option<u16> },
}

/// The operator's exceptions to the rule that only public addresses are reached.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    allow: Vec<Allow>,
}

/// The address class that makes `ip` internal, or `None` for a public address.
///
/// IPv4-mapped (`::ffff:a.b.c.d`) and IPv4-compatible (`::a.b.c.d`) IPv6 addresses are
/// judged by the IPv4 address they carry: the kernel connects `::ffff:127.0.0.1` to loopback.
pub fn internal_class(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_class(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return v4_class(v4);
            }
            let s = v6.segments();
            if v6.is_unspecified() {
                return Some("unspecified");
            }
            if v6.is_loopback() {
                return Some("loopback");
            }
            // Deprecated IPv4-compatible form `::a.b.c.d` (not `::` or `::1`, handled above).
            if s[..6] == [0; 6] {
                return v4_class(Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8))
                    .or(Some("reserved"));
            }
            match s[0] {
                x if x & 0xffc0 == 0xfe80 => Some("link-local"),
                // fec0::/10, the withdrawn site-local range, still routed inside some networks.
                x if x & 0xffc0 == 0xfec0 => Some("site-local"),
                x if x & 0xfe00 == 0xfc00 => Some("unique-local"),
                x if x & 0xff00 == 0xff00 => Some("multicast"),
                _ => None,
            }
        }
    }
}

fn v4_class(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_broadcast() {
        Some("broadcast")
    } else if a == 0 {
        // 0.0.0.0/8 "this network": 0.0.0.0 connects to the local host on Linux.
        Some("unspecified")
    } else if a == 127 {
        Some("loopback")
    } else if a == 10 || (a == 172 && (16..32).contains(&b)) || (a == 192 && b == 168) {
        Some("private")
    } else if a == 169 && b == 254 {
        Some("link-local")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared (CGNAT)")
    } else if (224..240).contains(&a) {
        Some("multicast")
    } else if a >= 240 {
        Some("reserved")
    } else {
        None
    }
}

fn in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    // A mapped IPv6 address matches the IPv4 ranges it stands for.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// `host[:port]` split, with `[v6]:port` and a bare IPv6 literal understood.
fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host.to_ascii_lowercase(), port));
    }
    if s.parse::<Ipv6Addr>().is_ok() {
        return Some((s.to_ascii_lowercase(), None));
    }
    match s.rsplit_once(':') {
        Some((h, p)) => Some((h.to_ascii_lowercase(), Some(p.parse().ok()?))),
        None => Some((s.to_ascii_lowercase(), None)),
    }
}

impl Policy {
    /// Parses `[network] allow`: CIDRs (`10.1.2.0/24`, `fd00::/8`), addresses, or
    /// `host[:port]`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the entry that is neither.
    pub fn new(entries: &[String]) -> Result<Self> {
        let bad = |e: &str, why: &str| {
            Error::Config(format!("[network] allow entry {e:?}: {why}; write a CIDR (10.1.2.0/24) or host[:port]"))
        };
        let mut allow = Vec::new();
        for raw in entries {
            let e = raw.trim();
            if e.is_empty() {
                return Err(bad(e, "empty"));
            }
            if let Some((addr, prefix)) = e.split_once('/') {
                let addr: IpAddr = addr.parse().map_err(|_| bad(e, "not an address before the /"))?;
                let max = if addr.is_ipv4() { 32 } else { 128 };
                let prefix: u8 =
                    prefix.parse().ok().filter(|p| *p <= max).ok_or_else(|| bad(e, "bad prefix length"))?;
                allow.push(Allow::Net { addr, prefix });
            } else if let Ok(addr) = e.parse::<IpAddr>() {
                allow.push(Allow::Net { addr, prefix: if addr.is_ipv4() { 32 } else { 128 } });
            } else {
                let (host, port) = split_host_port(e).ok_or_else(|| bad(e, "bad port"))?;
                if host.is_empty() || host.contains(['/', ' ', '@']) {
                    return Err(bad(e, "not a host name"));
                }
                allow.push(Allow::Host { host, port });
            }
        }
        Ok(Policy { allow })
    }

    /// Whether the operator named `host` (as written in the URL or grant); with `port`
    /// `None`, any entry for the host counts.
    fn host_allowed(&self, host: &str, port: Option<u16>) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.allow.iter().any(|a| match a {
            Allow::Host { host: h, port: p } => {
                h.eq_ignore_ascii_case(host) && (p.is_none() || port.is_none() || *p == port)
            }
            Allow::Net { .. } => false,
        })
    }

    /// Checks one resolved address `ip:port` reached for `host`.
    ///
    /// # Errors
    /// The refusal, saying how an operator allows it.
    pub fn check(&self, host: &str, ip: IpAddr, port: Option<u16>) -> std::result::Result<(), String> {
        let Some(class) = internal_class(ip) else { return Ok(()) };
        let by_net = self.allow.iter().any(|a| matches!(a, Allow::Net { addr, prefix } if in_net(ip, *addr, *prefix)));
        if by_net || self.host_allowed(host, port) {
            return Ok(());
        }
        let shown = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let via = if host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().is_ok() {
            String::new()
        } else {
            format!(" ({host} resolves to it)")
        };
        Err(format!(
            "{REFUSED} {class} address {shown}{via} are not allowed; an operator may allow it with [network] allow in plugdesk.toml"
        ))
    }

    /// Checks an `http(s)` URL before a request: an IP-literal host (which no resolver sees)
    /// against the address rules, and a named host the operator allowed only on other ports.
    ///
    /// # Errors
    /// The refusal; a URL that does not parse.
    pub fn check_url(&self, url: &str) -> std::result::Result<(), String> {
        let u = reqwest::Url::parse(url).map_err(|e| format!("not an absolute URL: {e}"))?;
        let port = u.port_or_known_default();
        // The URL parser has normalised the host: `0x7f.1` and `2130706433` read 127.0.0.1.
        let host = u.host_str().ok_or("the URL has no host")?;
        if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            return self.check(host, ip, port);
        }
        // A named host the operator allowed on some ports only: the resolver, which trusts
        // the name, cannot see the port, so the other ports are refused here.
        let listed =
            self.allow.iter().any(|a| matches!(a, Allow::Host { host: h, .. } if h.eq_ignore_ascii_case(host)));
        if listed && !self.host_allowed(host, port) {
            let port = port.map_or_else(|| "no port".to_owned(), |p| format!("port {p}"));
            return Err(format!(
                "{REFUSED} {host} on {port} are not allowed; [network] allow in plugdesk.toml names it with other ports"
            ));
        }
        Ok(())
    }

    /// Resolves `host:port`, drops the addresses this policy refuses and connects to the first
    /// allowed one that answers: the address checked is the address connected to.
    ///
    /// # Errors
    /// The refusal when every address is refused; resolution and connection failures.
    pub fn connect_tcp(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> std::result::Result<std::net::TcpStream, String> {
        let addrs: Vec<SocketAddr> =
            (host, port).to_socket_addrs().map_err(|e| format!("cannot resolve {host}: {e}"))?.collect();
        let mut last = format!("{host} has no address");
        let mut refused = None;
        for addr in addrs {
            if let Err(why) = self.check(host, addr.ip(), Some(port)) {
                refused.get_or_insert(why);
                continue;
            }
            match std::net::TcpStream::connect_timeout(&addr, timeout) {
                Ok(tcp) => return Ok(tcp),
                Err(e) => last = format!("cannot connect to {host}:{port}: {e}"),
            }
        }
        Err(refused.unwrap_or(last))
    }
}

/// A reqwest resolver that resolves with the system resolver and keeps only the addresses the
/// policy allows; when none is left the request fails with the refusal (an
/// [`std::io::ErrorKind::PermissionDenied`] error, see [`refusal`]).
#[derive(Debug, Clone)]
pub struct Resolver {
    policy: Arc<Policy>,
}

impl Resolver {
    /// A resolver enforcing `policy`.
    pub fn new(policy: Arc<Policy>) -> Self {
        Resolver { policy }
    }
}

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0: reqwest puts the URL's port on the addresses it is given.
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match policy.check(&host, a.ip(), None) {
                    Ok(()) => true,
                    Err(why) => {
                        refused.get_or_insert(why);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let why = refused.unwrap_or_else(|| format!("{host} has no address"));
                return Err(Box::new(std::io::Error::new(std::io::ErrorKind::PermissionDenied, why)) as _);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The policy's refusal inside a request error, if that is why it failed.
pub fn refusal(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::PermissionDenied
            && is_refused(&io.to_string())
        {
            return Some(io.to_string());
        }
        cur = err.source();
    }
    None
}

/// Whether an error message is this policy's refusal (permanent until the operator changes
/// the configuration, so not worth a retry).
pub fn is_refused(message: &str) -> bool {
    message.starts_with(REFUSED)
}

/// A reqwest client builder that connects only where `policy` allows: the filtering
/// resolver, and no proxy from the environment (a proxy would resolve the target itself).
pub fn client_builder(policy: &Arc<Policy>) -> reqwest::ClientBuilder {
    reqwest::Client::builder().no_proxy().dns_resolver(Arc::new(Resolver::new(policy.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(p: &Policy, ip: &str) -> bool {
        let ip: IpAddr = ip.parse().expect("an address");
        p.check(&ip.to_string(), ip, Some(80)).is_err()
    }

    #[test]
    fn every_internal_class_is_refused_in_v4_v6_and_mapped_forms() {
        let p = Policy::default();
        for ip in [
            "127.0.0.1",
            "127.255.0.9",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.254",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.0.1",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "239.1.2.3",
            "255.255.255.255",
            "0.0.0.0",
            "0.1.2.3",
            "240.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "febf::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:192.168.0.1",
            "::ffff:0.0.0.0",
            "::127.0.0.1",
            "fec0::1",
        ] {
            assert!(refused(&p, ip), "{ip} must be refused");
        }
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "172.15.255.255",
            "100.128.0.1",
            "100.63.255.255",
            "169.255.0.1",
            "192.169.0.1",
            "11.0.0.1",
            "2001:4860:4860::8888",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(!refused(&p, ip), "{ip} is public");
        }
    }

    #[test]
    fn the_refusal_names_the_address_and_how_to_allow_it() {
        let p = Policy::default();
        let e = p.check("127.0.0.1", "127.0.0.1".parse().expect("an address"), Some(80));
        assert_eq!(
            e,
            Err("outbound connections to loopback address 127.0.0.1 are not allowed; an operator may allow it with [network] allow in plugdesk.toml".into())
        );
        let e = p.check("localhost", "::1".parse().expect("an address"), None).err().unwrap_or_default();
        assert!(e.contains("(localhost resolves to it)"), "{e}");
    }

    #[test]
    fn the_operator_allows_networks_addresses_and_hosts() {
        let allow = |v: &[&str]| Policy::new(&v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        let p =
            allow(&["10.1.2.0/24", "127.0.0.1", "fd00::/8", "mail.internal:993", "crm.local"]).expect("valid entries");
        assert!(!refused(&p, "10.1.2.200"));
        assert!(refused(&p, "10.1.3.1"));
        assert!(!refused(&p, "127.0.0.1"));
        assert!(!refused(&p, "::ffff:127.0.0.1"));
        assert!(refused(&p, "127.0.0.2"));
        assert!(!refused(&p, "fd00::5"));
        let ip: IpAddr = "10.9.9.9".parse().expect("an address");
        assert!(p.check("mail.internal", ip, Some(993)).is_ok());
        assert!(p.check("mail.internal", ip, Some(25)).is_err());
        assert!(p.check("crm.local", ip, Some(8443)).is_ok());
        assert!(p.check("other.local", ip, Some(993)).is_err());
        for bad in ["10.0.0.0/33", "nonsense/8", "host:port", "", "[::1"] {
            assert!(allow(&[bad]).is_err(), "{bad:?} must be rejected");
        }
        assert!(allow(&["[::1]:8080", "::1", "[fe80::1]"]).is_ok());
    }

    #[test]
    fn ip_literal_urls_are_checked_before_any_request() {
        let p = Policy::default();
        for url in [
            "http://127.0.0.1:9/x",
            "http://[::1]/",
            "https://[::ffff:7f00:1]/",
            "http://169.254.169.254/latest/meta-data",
            "http://0x7f.1/",
            "http://2130706433/",
        ] {
            assert!(p.check_url(url).is_err(), "{url}");
        }
        assert!(p.check_url("https://93.184.215.14/").is_ok());
        let p = Policy::new(&["mail.internal:993".to_owned()]).expect("valid entry");
        assert!(p.check_url("https://mail.internal:993/").is_ok());
        assert!(p.check_url("https://mail.internal/").is_err());
    }
}
