//! ARP on an underlay uplink: learning remote VTEPs' MACs, answering for our VTEP addresses,
//! asking for unresolved remotes, all sent after the burst that asked for it.

use std::net::Ipv4Addr;

use vhost_user::virtq::BURST;

use super::dest::{count_tx, UplinkIo};
use crate::eth::Mac;
use crate::port::Drop;
use crate::wire;

/// An ARP packet to send after a burst.
#[derive(Clone, Copy)]
pub(super) enum ArpTask {
    /// Who has `target`? Tell `local`.
    Request { local: Ipv4Addr, target: Ipv4Addr },
    /// `local` is at our MAC, to the asker.
    Reply {
        local: Ipv4Addr,
        asker_mac: Mac,
        asker_ip: Ipv4Addr,
    },
}

/// ARP packets to send, at most a burst's worth.
pub(super) struct ArpReplies {
    tasks: [ArpTask; BURST],
    pub(super) n: usize,
}

impl Default for ArpReplies {
    fn default() -> Self {
        ArpReplies {
            tasks: [ArpTask::Request {
                local: Ipv4Addr::UNSPECIFIED,
                target: Ipv4Addr::UNSPECIFIED,
            }; BURST],
            n: 0,
        }
    }
}

impl ArpReplies {
    pub(super) fn push(&mut self, t: ArpTask) {
        if self.n < BURST {
            self.tasks[self.n] = t;
            self.n += 1;
        }
    }
}

/// Learns a remote VTEP's MAC from its ARP, and answers requests for our VTEP addresses.
pub(super) fn handle_arp(up: &UplinkIo, a: &wire::ArpRx, out: &mut ArpReplies) {
    for t in &up.tunnels {
        if let Some(r) = t.remote_index(a.spa) {
            t.remotes[r].learn_mac(a.sha);
        }
    }
    if a.oper == wire::arp::REQUEST && up.tunnels.iter().any(|t| t.local == a.tpa) {
        out.push(ArpTask::Reply {
            local: a.tpa,
            asker_mac: a.sha,
            asker_ip: a.spa,
        });
    }
}

/// Once a second: an ARP request for every remote VTEP whose MAC is not known yet.
pub(super) fn resolve_remotes(up: &UplinkIo, now: u32, out: &mut ArpReplies) {
    for t in &up.tunnels {
        for r in t.remotes.iter() {
            let Some(ip) = r.addr() else { continue };
            if r.mac().is_none() && r.arp_due(now) {
                out.push(ArpTask::Request {
                    local: t.local,
                    target: ip,
                });
            }
        }
    }
}

pub(super) fn send_arp(pmd: usize, up: &mut UplinkIo, tasks: &ArpReplies) {
    let mut no_bufs = 0;
    for task in &tasks.tasks[..tasks.n] {
        let Ok(b) = up.io.tx_buf(wire::MIN_ETH_FRAME) else {
            no_bufs += 1;
            continue;
        };
        match *task {
            ArpTask::Request { local, target } => {
                wire::write_arp(b, wire::arp::REQUEST, up.mac, local, [0; 6], target)
            }
            ArpTask::Reply {
                local,
                asker_mac,
                asker_ip,
            } => wire::write_arp(b, wire::arp::REPLY, up.mac, local, asker_mac, asker_ip),
        };
    }
    let o = up.io.tx_flush();
    let c = &up.port.counters[pmd];
    count_tx(c, &o, 0);
    c.drop(Drop::TxNoDeviceBuffers, no_bufs);
}
