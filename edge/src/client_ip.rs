//! The client's address: the TCP peer, or, when that peer is a trusted proxy
//! (`MESH_TRUSTED_PROXIES`), the address it reports in the one forwarding header the proxies
//! write (`MESH_FORWARDED_HEADER`: `X-Forwarded-For` or `Forwarded`; the other is the client's
//! own and ignored). Limits,
//! audit records and sessions all use this one answer; per-address limits count it by
//! `mesh_contracts::client_address::limit_key` (an IPv6 client by its /64).

use std::net::IpAddr;

use poem::Request;

/// A block of addresses in CIDR notation (`10.0.0.0/8`, `::1/128`, or a bare address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    bits: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an address or CIDR block")]
pub struct InvalidCidr(pub String);

impl Cidr {
    pub fn parse(raw: &str) -> Result<Self, InvalidCidr> {
        let invalid = || InvalidCidr(raw.to_owned());
        let (addr, bits) = match raw.trim().split_once('/') {
            Some((addr, bits)) => (addr, Some(bits)),
            None => (raw.trim(), None),
        };
        let network: IpAddr = addr.parse().map_err(|_| invalid())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            Some(bits) => bits.parse::<u8>().map_err(|_| invalid())?,
            None => max,
        };
        if bits > max {
            return Err(invalid());
        }
        Ok(Self { network, bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(
                u128::from(u32::from(net)),
                u128::from(u32::from(ip)),
                32,
                self.bits,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), 128, self.bits)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, width: u8, bits: u8) -> bool {
    if bits == 0 {
        return true;
    }
    let shift = u32::from(width - bits);
    (a >> shift) == (b >> shift)
}

/// IPv4 peers seen through an IPv6 socket (`::ffff:a.b.c.d`) as plain IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The forwarding header the trusted proxies write. A proxy appends to the one it writes and
/// passes the other through as the client sent it, so only that one is believed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For` (ingress-nginx, most load balancers).
    #[default]
    XForwardedFor,
    /// `Forwarded` (RFC 7239).
    Forwarded,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is neither x-forwarded-for nor forwarded")]
pub struct InvalidForwardedHeader(pub String);

impl ForwardedHeader {
    pub fn parse(raw: &str) -> Result<Self, InvalidForwardedHeader> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Ok(Self::XForwardedFor),
            "forwarded" => Ok(Self::Forwarded),
            _ => Err(InvalidForwardedHeader(raw.to_owned())),
        }
    }
}

/// The proxies whose forwarding header is believed, and which header that is.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    blocks: Vec<Cidr>,
    header: ForwardedHeader,
}

impl TrustedProxies {
    pub fn new(blocks: Vec<Cidr>, header: ForwardedHeader) -> Self {
        Self { blocks, header }
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.blocks.iter().any(|block| block.contains(ip))
    }

    /// The client of `peer`, given the forwarding headers' hops (nearest last). Walks back
    /// from the peer through trusted proxies; the first untrusted hop is the client.
    pub fn client_of(&self, peer: IpAddr, hops: &[IpAddr]) -> IpAddr {
        let mut client = canonical(peer);
        for hop in hops.iter().rev() {
            if !self.trusts(client) {
                break;
            }
            client = canonical(*hop);
        }
        client
    }

    /// The client address of `req` (`None` when the peer is not an IP socket).
    pub fn resolve(&self, req: &Request) -> Option<IpAddr> {
        let peer = req.remote_addr().as_socket_addr()?.ip();
        if !self.trusts(peer) {
            return Some(canonical(peer));
        }
        Some(self.client_of(peer, &forwarded_hops(req, self.header)))
    }
}

/// Hops named by `header` (`X-Forwarded-For`, or `Forwarded: for=`), nearest last. A hop that
/// is not an address (`unknown`, an obfuscated name, a `Forwarded` element without `for=`)
/// ends the list there.
fn forwarded_hops(req: &Request, header: ForwardedHeader) -> Vec<IpAddr> {
    let joined = |name: &str| {
        req.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",")
    };
    let raw: Vec<String> = match header {
        ForwardedHeader::XForwardedFor => joined("x-forwarded-for")
            .split(',')
            .map(|h| h.trim().to_owned())
            .collect(),
        ForwardedHeader::Forwarded => joined("forwarded")
            .split(',')
            .filter(|element| !element.trim().is_empty())
            .map(|element| {
                element
                    .split(';')
                    .find_map(|pair| {
                        let (name, value) = pair.trim().split_once('=')?;
                        name.eq_ignore_ascii_case("for")
                            .then(|| value.trim().trim_matches('"').to_owned())
                    })
                    .unwrap_or_else(|| "unknown".to_owned())
            })
            .collect(),
    };
    let mut hops = Vec::new();
    for hop in raw.iter().filter(|h| !h.is_empty()) {
        match parse_hop(hop) {
            Some(ip) => hops.push(ip),
            // An unusable hop: nothing before it can be believed.
            None => hops.clear(),
        }
    }
    hops
}

/// `1.2.3.4`, `1.2.3.4:5678`, `[::1]` or `[::1]:5678`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    hop.rsplit_once(':')?.0.parse().ok()
}

/// The resolved client address, left in the request by the middleware.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_parse_and_match() {
        let block = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(block.contains(ip("10.1.200.3")));
        assert!(!block.contains(ip("10.2.0.1")));
        assert!(block.contains(ip("::ffff:10.1.0.9")));
        assert!(Cidr::parse("::1").unwrap().contains(ip("::1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(!Cidr::parse("fd00::/8").unwrap().contains(ip("10.0.0.1")));
        for bad in ["10.0.0.0/33", "nonsense", "10.0.0.0/x", "::/129"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_client_is_the_first_untrusted_hop_from_the_peer() {
        let proxies = TrustedProxies::new(
            vec![Cidr::parse("10.0.0.0/8").unwrap()],
            ForwardedHeader::default(),
        );
        let hops = [ip("6.6.6.6"), ip("1.2.3.4"), ip("10.0.0.7")];
        // Through two trusted proxies: the client is the hop before them, not a spoofed one.
        assert_eq!(proxies.client_of(ip("10.0.0.1"), &hops), ip("1.2.3.4"));
        // An untrusted peer is the client whatever it claims.
        assert_eq!(proxies.client_of(ip("5.5.5.5"), &hops), ip("5.5.5.5"));
        assert_eq!(proxies.client_of(ip("10.0.0.1"), &[]), ip("10.0.0.1"));
    }

    #[test]
    fn forwarded_hops_are_parsed_in_every_spelling() {
        assert_eq!(parse_hop("1.2.3.4:80"), Some(ip("1.2.3.4")));
        assert_eq!(parse_hop("[2001:db8::1]:443"), Some(ip("2001:db8::1")));
        assert_eq!(parse_hop("2001:db8::1"), Some(ip("2001:db8::1")));
        assert_eq!(parse_hop("unknown"), None);
        let req = Request::builder()
            .header(
                "forwarded",
                r#"for=192.0.2.60;proto=http, for="[2001:db8::7]:1""#,
            )
            .header("x-forwarded-for", "203.0.113.9, unknown, 198.51.100.2")
            .finish();
        assert_eq!(
            forwarded_hops(&req, ForwardedHeader::Forwarded),
            vec![ip("192.0.2.60"), ip("2001:db8::7")]
        );
        assert_eq!(
            forwarded_hops(&req, ForwardedHeader::XForwardedFor),
            vec![ip("198.51.100.2")]
        );
        // An element without `for=` names no hop: nothing before it is believed.
        let req = Request::builder()
            .header("forwarded", "for=192.0.2.60, proto=https, for=198.51.100.2")
            .finish();
        assert_eq!(
            forwarded_hops(&req, ForwardedHeader::Forwarded),
            vec![ip("198.51.100.2")]
        );
    }

    /// A proxy that writes `X-Forwarded-For` passes the client's own `Forwarded` through:
    /// the client must not pick its address with it (nor, the other way round, with
    /// `X-Forwarded-For` behind a proxy that writes `Forwarded`).
    #[test]
    fn only_the_header_the_proxies_write_is_believed() {
        let trusted = vec![Cidr::parse("10.0.0.0/8").unwrap()];
        let req = Request::builder()
            .header("forwarded", "for=203.0.113.77")
            .header("x-forwarded-for", "198.51.100.2")
            .finish();
        let hops = |header| {
            let proxies = TrustedProxies::new(trusted.clone(), header);
            proxies.client_of(ip("10.0.0.1"), &forwarded_hops(&req, header))
        };
        assert_eq!(hops(ForwardedHeader::XForwardedFor), ip("198.51.100.2"));
        assert_eq!(hops(ForwardedHeader::Forwarded), ip("203.0.113.77"));
        let spoofed = Request::builder()
            .header("forwarded", "for=203.0.113.77")
            .finish();
        let proxies = TrustedProxies::new(trusted.clone(), ForwardedHeader::XForwardedFor);
        assert_eq!(
            proxies.client_of(
                ip("10.0.0.1"),
                &forwarded_hops(&spoofed, ForwardedHeader::XForwardedFor)
            ),
            ip("10.0.0.1"),
            "no X-Forwarded-For: the proxy itself is the client"
        );
        assert_eq!(
            ForwardedHeader::parse(" Forwarded "),
            Ok(ForwardedHeader::Forwarded)
        );
        assert!(ForwardedHeader::parse("x-real-ip").is_err());
    }
}
