//! The kernel side of the mirror: rtnetlink requests (links, bridge FDB entries, dumps) on one
//! socket, neighbour/FDB notifications on another, through `netlink-sys` and the message
//! types of `netlink-packet-route`.
//!
//! Everything read back is decoded defensively: a message the crate cannot parse is skipped
//! (and counted by the caller), never trusted in part.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::time::Duration;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoBridgePort, InfoData, InfoKind, InfoPortData,
    InfoPortKind, InfoVeth, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::eth::Mac;

/// rtnetlink multicast group of neighbour (and bridge FDB) changes (`RTNLGRP_NEIGH`).
const RTNLGRP_NEIGH: u32 = 3;
/// Receive buffer: one kernel datagram (a dump part is at most 32 KiB).
const RECV_BUF: usize = 64 * 1024;
/// Socket buffer for notifications: a full table of changes at once (zebra restarting) must
/// not overrun it often; when it does, the mirror dumps and starts over.
const EVENT_SOCKET_BUF: usize = 4 * 1024 * 1024;
/// Longest dump read before giving up: a kernel that keeps sending is broken or hostile.
const MAX_DUMP_MESSAGES: usize = 1 << 20;

/// A datagram's worth of decoded messages; `undecodable` counts those skipped.
#[derive(Default)]
struct Batch {
    messages: Vec<NetlinkMessage<RouteNetlinkMessage>>,
    undecodable: usize,
}

fn recv_batch(sock: &Socket) -> io::Result<Batch> {
    let mut buf: Vec<u8> = Vec::with_capacity(RECV_BUF);
    let n = sock.recv(&mut buf, 0)?;
    Ok(decode_batch(&buf[..n.min(buf.len())]))
}

/// Splits one datagram from the kernel into its netlink messages; what does not decode is
/// counted, never trusted (the fuzz target `evpn_fdb` feeds it arbitrary bytes).
fn decode_batch(data: &[u8]) -> Batch {
    let mut out = Batch::default();
    let mut off = 0usize;
    while data.len().saturating_sub(off) >= 16 {
        let len = u32::from_ne_bytes([data[off], data[off + 1], data[off + 2], data[off + 3]]);
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len < 16 || len > data.len() - off {
            out.undecodable += 1;
            break;
        }
        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[off..off + len]) {
            Ok(m) => out.messages.push(m),
            Err(_) => out.undecodable += 1,
        }
        off += len.div_ceil(4) * 4;
    }
    out
}

/// The FDB changes of a batch: (added, entry) for each neighbour message, in order.
fn neighbour_changes(b: Batch) -> Vec<(bool, NeighbourMessage)> {
    b.messages
        .into_iter()
        .filter_map(|m| match m.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(n)) => Some((true, n)),
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelNeighbour(n)) => Some((false, n)),
            _ => None,
        })
        .collect()
}

/// One datagram of notifications as [`Events::recv`] reads it: the neighbour changes it
/// carries and how many messages did not decode.
pub fn decode_notifications(data: &[u8]) -> (Vec<(bool, NeighbourMessage)>, usize) {
    let b = decode_batch(data);
    let bad = b.undecodable;
    (neighbour_changes(b), bad)
}

fn encode(msg: RouteNetlinkMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut nl = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::InnerMessage(msg));
    nl.header.flags = flags;
    nl.header.sequence_number = seq;
    nl.finalize();
    let mut buf = vec![0u8; nl.buffer_len()];
    nl.serialize(&mut buf);
    buf
}

/// The request socket.
pub struct Rtnl {
    sock: Socket,
    seq: u32,
    /// Messages skipped because they did not decode.
    pub undecodable: u64,
}

impl Rtnl {
    pub fn open() -> io::Result<Rtnl> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        // A reply lost for good must not hang the mirror.
        nix::sys::socket::setsockopt(
            &sock.as_fd(),
            nix::sys::socket::sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(5, 0),
        )
        .map_err(io::Error::from)?;
        Ok(Rtnl {
            sock,
            seq: 0,
            undecodable: 0,
        })
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let buf = encode(msg, flags, self.seq);
        self.sock.send(&buf, 0)?;
        Ok(self.seq)
    }

    /// Sends a request and waits for its acknowledgement (or error).
    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        let seq = self.send(msg, flags | NLM_F_REQUEST | NLM_F_ACK)?;
        loop {
            let b = recv_batch(&self.sock)?;
            self.undecodable += b.undecodable as u64;
            for m in b.messages {
                if m.header.sequence_number != seq {
                    continue;
                }
                if let NetlinkPayload::Error(e) = m.payload {
                    return match e.code {
                        None => Ok(()),
                        Some(_) => Err(e.to_io()),
                    };
                }
            }
        }
    }

    /// Sends a dump request and collects the inner messages of the answer.
    fn dump(&mut self, msg: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        let seq = self.send(msg, NLM_F_REQUEST | NLM_F_DUMP)?;
        let mut out = Vec::new();
        loop {
            let b = recv_batch(&self.sock)?;
            self.undecodable += b.undecodable as u64;
            for m in b.messages {
                if m.header.sequence_number != seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
                    NetlinkPayload::InnerMessage(i) => out.push(i),
                    _ => {}
                }
            }
            if out.len() > MAX_DUMP_MESSAGES {
                return Err(io::Error::other("netlink dump does not end"));
            }
        }
    }

    /// Every link: (index, name).
    pub fn links(&mut self) -> io::Result<Vec<(u32, String)>> {
        let msgs = self.dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => {
                    let name = l.attributes.iter().find_map(|a| match a {
                        LinkAttribute::IfName(n) => Some(n.clone()),
                        _ => None,
                    })?;
                    Some((l.header.index, name))
                }
                _ => None,
            })
            .collect())
    }

    /// The index of link `name`, if it exists.
    pub fn link_index(&mut self, name: &str) -> io::Result<Option<u32>> {
        Ok(self
            .links()?
            .into_iter()
            .find(|(_, n)| n == name)
            .map(|(i, _)| i))
    }

    fn new_link(&mut self, name: &str, info: Vec<LinkInfo>) -> io::Result<u32> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_owned()));
        m.attributes.push(LinkAttribute::LinkInfo(info));
        self.request(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)?;
        self.link_index(name)?
            .ok_or_else(|| io::Error::other(format!("link {name} vanished after creation")))
    }

    /// A Linux bridge named `name`; returns its index.
    pub fn add_bridge(&mut self, name: &str) -> io::Result<u32> {
        self.new_link(name, vec![LinkInfo::Kind(InfoKind::Bridge)])
    }

    /// A vxlan device that neither learns nor needs an underlay device: VNI `vni`, source
    /// `local`, UDP destination port `port`.
    pub fn add_vxlan(
        &mut self,
        name: &str,
        vni: u32,
        local: Ipv4Addr,
        port: u16,
    ) -> io::Result<u32> {
        self.new_link(
            name,
            vec![
                LinkInfo::Kind(InfoKind::Vxlan),
                LinkInfo::Data(InfoData::Vxlan(vec![
                    InfoVxlan::Id(vni),
                    InfoVxlan::Local(local),
                    InfoVxlan::Port(port),
                    InfoVxlan::Learning(false),
                ])),
            ],
        )
    }

    /// A veth pair; returns the index of `name` (the end that joins the bridge).
    pub fn add_veth(&mut self, name: &str, peer: &str) -> io::Result<u32> {
        let mut p = LinkMessage::default();
        p.attributes.push(LinkAttribute::IfName(peer.to_owned()));
        self.new_link(
            name,
            vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))),
            ],
        )
    }

    fn set_link(&mut self, index: u32, f: impl FnOnce(&mut LinkMessage)) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        f(&mut m);
        self.request(RouteNetlinkMessage::SetLink(m), 0)
    }

    pub fn set_master(&mut self, index: u32, master: u32) -> io::Result<()> {
        self.set_link(index, |m| {
            m.attributes.push(LinkAttribute::Controller(master))
        })
    }

    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        self.set_link(index, |m| {
            m.header.flags = LinkFlags::Up;
            m.header.change_mask = LinkFlags::Up;
        })
    }

    /// No IPv6 link-local address, hence no neighbour discovery or MLD from the mirror.
    pub fn set_no_ipv6_addr(&mut self, index: u32) -> io::Result<()> {
        self.set_link(index, |m| {
            m.attributes
                .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
                    vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
                )]))
        })
    }

    /// The bridge does not learn on port `index`.
    pub fn set_port_no_learning(&mut self, index: u32) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::PortKind(InfoPortKind::Bridge),
            LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::Learning(
                false,
            )])),
        ]));
        self.request(RouteNetlinkMessage::NewLink(m), 0)
    }

    pub fn del_link(&mut self, index: u32) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        self.request(RouteNetlinkMessage::DelLink(m), 0)
    }

    /// Adds (or moves to port `ifindex`) a static bridge FDB entry for `mac`, or removes it.
    pub fn bridge_fdb(&mut self, add: bool, ifindex: u32, mac: Mac) -> io::Result<()> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        m.header.ifindex = ifindex;
        m.header.state = NeighbourState::Noarp;
        m.header.flags = NeighbourFlags::Controller;
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        if add {
            self.request(
                RouteNetlinkMessage::NewNeighbour(m),
                NLM_F_CREATE | NLM_F_REPLACE,
            )
        } else {
            self.request(RouteNetlinkMessage::DelNeighbour(m), 0)
        }
    }

    /// Every bridge FDB entry of the namespace.
    pub fn dump_fdb(&mut self) -> io::Result<Vec<NeighbourMessage>> {
        let mut q = NeighbourMessage::default();
        q.header.family = AddressFamily::Bridge;
        Ok(self
            .dump(RouteNetlinkMessage::GetNeighbour(q))?
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) => Some(n),
                _ => None,
            })
            .collect())
    }
}

/// What [`Events::recv`] saw.
pub enum Received {
    /// Neighbour messages (true: new, false: deleted); maybe none (timeout).
    Changes(Vec<(bool, NeighbourMessage)>, usize),
    /// The kernel dropped notifications (ENOBUFS): only a full dump tells the truth now.
    Overrun,
}

/// The notification socket.
pub struct Events {
    sock: Socket,
}

impl Events {
    pub fn open(timeout: Duration) -> io::Result<Events> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.add_membership(RTNLGRP_NEIGH)?;
        sock.set_rx_buf_sz(EVENT_SOCKET_BUF)?;
        let tv = nix::sys::time::TimeVal::new(
            i64::try_from(timeout.as_secs()).unwrap_or(1),
            i64::from(timeout.subsec_micros()),
        );
        nix::sys::socket::setsockopt(
            &sock.as_fd(),
            nix::sys::socket::sockopt::ReceiveTimeout,
            &tv,
        )
        .map_err(io::Error::from)?;
        Ok(Events { sock })
    }

    /// Discards the notifications queued now. After an overrun they are older than the full
    /// read that follows and, with some of theirs lost, could undo it if applied after.
    pub fn drain(&mut self) -> usize {
        let mut n = 0;
        let mut buf: Vec<u8> = Vec::with_capacity(RECV_BUF);
        // Bounded: a kernel that keeps sending must not hold the mirror here.
        while n < 100_000 {
            buf.clear();
            match self.sock.recv(&mut buf, nix::libc::MSG_DONTWAIT) {
                Ok(_) => n += 1,
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => n += 1,
                Err(_) => break,
            }
        }
        n
    }

    /// Waits up to the timeout for one datagram of notifications.
    pub fn recv(&mut self) -> io::Result<Received> {
        match recv_batch(&self.sock) {
            Ok(b) => {
                let bad = b.undecodable;
                Ok(Received::Changes(neighbour_changes(b), bad))
            }
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => Ok(Received::Overrun),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(Received::Changes(Vec::new(), 0))
            }
            Err(e) => Err(e),
        }
    }
}
