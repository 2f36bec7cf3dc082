//! The key every per-address limit counts a client under (the edge's rate limits and
//! connection cap, the user service's sign-in lockout and hashing share), from the client
//! address the edge resolved and passes on in each call's context.
//!
//! An IPv4 address is its own key. An IPv6 address is keyed by its /64: that is the block one
//! subscriber gets (a LAN's prefix, the smallest block SLAAC works in, RFC 6177 / RFC 7421), so
//! a client holds at least a /64 and can pick a fresh address in it for every request; keyed by
//! the full address, it would escape every per-address limit. A /64 is not shared between
//! subscribers, so keying by it does not merge strangers (wider blocks, a /56 or /48, would).

use std::net::{IpAddr, Ipv6Addr};

/// The bits of an IPv6 address that name its /64.
const SUBSCRIBER_PREFIX: u128 = !0 << 64;

/// The limit key of `address` (as the edge wrote it): an IPv4 address (also when written as
/// an IPv4-mapped IPv6 one) as it is, an IPv6 address as its /64 (`2001:db8:1:2::/64`), and
/// anything that is not an address as it is.
pub fn limit_key(address: &str) -> String {
    match address.trim().parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => format!("{}/64", Ipv6Addr::from(u128::from(v6) & SUBSCRIBER_PREFIX)),
        },
        Err(_) => address.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_is_its_own_key_and_ipv6_is_keyed_by_its_64() {
        assert_eq!(limit_key("203.0.113.7"), "203.0.113.7");
        assert_eq!(limit_key("::ffff:203.0.113.7"), "203.0.113.7");
        let one = limit_key("2001:db8:1:2:aaaa:bbbb:cccc:dddd");
        assert_eq!(one, "2001:db8:1:2::/64");
        // Every address of one /64 shares the key; the next /64 has its own.
        assert_eq!(limit_key("2001:db8:1:2::1"), one);
        assert_eq!(limit_key("2001:db8:1:2:ffff:ffff:ffff:ffff"), one);
        assert_ne!(limit_key("2001:db8:1:3::1"), one);
        assert_eq!(limit_key("::1"), "::/64");
        assert_eq!(limit_key("not an address"), "not an address");
        assert_eq!(limit_key(""), "");
    }
}
