//! Re-announcing a pod's addresses after the uplink fails over, so switches and neighbours
//! learn the new path at once: a gratuitous ARP request per IPv4 address and an unsolicited
//! neighbour advertisement per IPv6 address, written by hand (the one place in the agent that
//! builds packet bytes) and sent on a raw packet socket inside the pod's namespace.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;

use ipnet::IpNet;
use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, sendto, socket};

use super::error::DatapathError;

const ETHERTYPE_ARP: [u8; 2] = [0x08, 0x06];
const ETHERTYPE_IPV6: [u8; 2] = [0x86, 0xdd];
/// ff02::1, all nodes, and its Ethernet multicast address.
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];

/// A gratuitous ARP request for `ip` from `mac`: sender and target address are both `ip`
/// (RFC 5227's announcement), broadcast. 42 bytes: Ethernet header + ARP for IPv4.
pub fn gratuitous_arp(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]); // destination: broadcast
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETHERTYPE_ARP);
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // hardware type: Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // protocol type: IPv4
    f[18] = 6; // hardware address length
    f[19] = 4; // protocol address length
    f[20..22].copy_from_slice(&1u16.to_be_bytes()); // operation: request
    f[22..28].copy_from_slice(&mac); // sender hardware address
    f[28..32].copy_from_slice(&ip.octets()); // sender protocol address
    // target hardware address stays zero
    f[38..42].copy_from_slice(&ip.octets()); // target protocol address
    f
}

/// An unsolicited neighbour advertisement (RFC 4861 §7.2.6) for `ip` from `mac` to all
/// nodes, with the Override flag and the target link-layer address option. 86 bytes:
/// Ethernet + IPv6 + ICMPv6 (24) + option (8).
pub fn unsolicited_na(mac: [u8; 6], ip: Ipv6Addr) -> [u8; 86] {
    const ICMP_LEN: usize = 32;
    let mut f = [0u8; 86];
    f[0..6].copy_from_slice(&ALL_NODES_MAC);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETHERTYPE_IPV6);
    let ip6 = &mut f[14..54];
    ip6[0] = 0x60; // version 6, traffic class and flow label zero
    ip6[4..6].copy_from_slice(&(ICMP_LEN as u16).to_be_bytes()); // payload length
    ip6[6] = 58; // next header: ICMPv6
    ip6[7] = 255; // hop limit: neighbour discovery requires 255
    ip6[8..24].copy_from_slice(&ip.octets());
    ip6[24..40].copy_from_slice(&ALL_NODES.octets());
    let icmp = &mut f[54..86];
    icmp[0] = 136; // type: neighbour advertisement; code 0
    icmp[4] = 0x20; // flags: Override (not Router, not Solicited)
    icmp[8..24].copy_from_slice(&ip.octets()); // target address
    icmp[24] = 2; // option: target link-layer address
    icmp[25] = 1; // option length in units of 8 bytes
    icmp[26..32].copy_from_slice(&mac);
    let sum = icmpv6_checksum(ip, ALL_NODES, &f[54..86]);
    f[56..58].copy_from_slice(&sum.to_be_bytes());
    f
}

/// The ICMPv6 checksum: one's complement sum over the IPv6 pseudo-header and the message
/// (whose checksum field is zero).
fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(40 + msg.len());
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(msg);
    let mut sum: u32 = pseudo.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends the announcements for `addresses` out of `ifname`. Must run on a thread inside the
/// pod's namespace: the interface is looked up, and the socket created, in the caller's
/// namespace.
pub(super) fn send(ifname: &str, addresses: &[IpNet]) -> Result<usize, DatapathError> {
    let err = |source| DatapathError::Announce { ifname: ifname.to_string(), source };
    // getifaddrs reports each interface's AF_PACKET address: its index and MAC, ready to be
    // the destination of a raw frame, without building a sockaddr_ll by hand.
    let link = nix::ifaddrs::getifaddrs()
        .map_err(err)?
        .filter(|i| i.interface_name == ifname)
        .find_map(|i| i.address.and_then(|a| a.as_link_addr().copied()))
        .ok_or_else(|| DatapathError::NoSuchLink { name: ifname.to_string() })?;
    let mac = link.addr().ok_or_else(|| DatapathError::NoSuchLink { name: ifname.to_string() })?;
    // Protocol 0: the socket only sends, it receives nothing.
    let fd = socket(AddressFamily::Packet, SockType::Raw, SockFlag::SOCK_CLOEXEC, None).map_err(err)?;
    let mut sent = 0;
    for address in addresses {
        let frame: Vec<u8> = match address {
            IpNet::V4(net) => gratuitous_arp(mac, net.addr()).to_vec(),
            IpNet::V6(net) => unsolicited_na(mac, net.addr()).to_vec(),
        };
        sendto(fd.as_raw_fd(), &frame, &link, MsgFlags::empty()).map_err(err)?;
        sent += 1;
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];

    #[test]
    fn gratuitous_arp_bytes() {
        let f = gratuitous_arp(MAC, Ipv4Addr::new(10, 1, 2, 3));
        #[rustfmt::skip]
        let want: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x11, 0x22, 0x33, 0x44, 0x55, 0x08, 0x06,
            0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01,
            0x02, 0x11, 0x22, 0x33, 0x44, 0x55, 10, 1, 2, 3,
            0, 0, 0, 0, 0, 0, 10, 1, 2, 3,
        ];
        assert_eq!(f, want);
    }

    #[test]
    fn unsolicited_na_layout_and_checksum() {
        let ip: Ipv6Addr = "fd00::5".parse().expect("ip");
        let f = unsolicited_na(MAC, ip);
        assert_eq!(&f[0..6], &ALL_NODES_MAC);
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!(f[14] >> 4, 6);
        assert_eq!(u16::from_be_bytes([f[18], f[19]]), 32);
        assert_eq!((f[20], f[21]), (58, 255));
        assert_eq!(&f[22..38], &ip.octets());
        assert_eq!(&f[38..54], &ALL_NODES.octets());
        assert_eq!((f[54], f[55], f[58]), (136, 0, 0x20));
        assert_eq!(&f[62..78], &ip.octets());
        assert_eq!(&f[78..86], &[2, 1, 0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);
        // A correct checksum makes the sum over pseudo-header and message (checksum included)
        // come out as all ones, i.e. the recomputed checksum is zero.
        assert_eq!(icmpv6_checksum(ip, ALL_NODES, &f[54..86]), 0);
        assert_ne!(u16::from_be_bytes([f[56], f[57]]), 0);
    }

    #[test]
    fn checksum_known_value() {
        // RFC 1071's example words 0001 f203 f4f5 f6f7 sum to ddf2; the pseudo-header here is
        // all zero except length 8 and next header 58, which add 0x0008 + 0x003a.
        let sum = icmpv6_checksum(
            Ipv6Addr::UNSPECIFIED,
            Ipv6Addr::UNSPECIFIED,
            &[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7],
        );
        assert_eq!(sum, !(0xddf2u16 + 0x0008 + 0x003a));
    }
}
