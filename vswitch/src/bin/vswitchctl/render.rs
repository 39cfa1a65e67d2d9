//! The tables `vswitchctl` prints for people, one renderer per command's reply.

use std::fmt::Write as _;

use vswitch::ctl::{
    ChannelsReply, DeviceInfo, FdbReply, PmdStatsReply, RebalanceReply, RxqShowReply, ShowReply,
    StatsReply,
};
use vswitch::fdb::format_mac;

/// Left-aligned text columns, right-aligned where `numeric`, two spaces apart.
fn table(headers: &[&str], numeric: &[bool], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let w = widths[i];
            if i > 0 {
                line.push_str("  ");
            }
            if numeric.get(i).copied().unwrap_or(false) {
                let _ = write!(line, "{cell:>w$}");
            } else {
                let _ = write!(line, "{cell:<w$}");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

pub(crate) fn render_show(reply: &ShowReply) -> String {
    if reply.ports.is_empty() && reply.devices.is_empty() {
        return "no ports\n".to_owned();
    }
    let mut out = String::new();
    for p in &reply.ports {
        let vlan = p
            .vlan
            .map_or("untagged".to_owned(), |v| format!("vlan {v}"));
        let _ = writeln!(
            out,
            "{}: {} {}, {vlan}, {}",
            p.name,
            p.mode,
            p.path.display(),
            p.state
        );
        let _ = writeln!(
            out,
            "  features: {:#018x} {}",
            p.features,
            p.features_names.join(" ")
        );
        let _ = writeln!(out, "  protocol features: {:#018x}", p.protocol_features);
        let mtu = p.mtu.map_or("-".to_owned(), |m| m.to_string());
        let mac = p.mac.as_deref().unwrap_or("-");
        let _ = writeln!(
            out,
            "  queue pairs: {}, mtu: {mtu}, mac: {mac}",
            p.queue_pairs
        );
        if p.announcements > 0 {
            let _ = writeln!(
                out,
                "  migration announcements (RARP) sent: {}",
                p.announcements
            );
        }
        if !p.queues.is_empty() {
            let rows: Vec<Vec<String>> = p
                .queues
                .iter()
                .map(|q| {
                    vec![
                        q.index.to_string(),
                        yes_no(q.enabled),
                        yes_no(q.started),
                        q.size.to_string(),
                        q.pmd.map_or("-".to_owned(), |n| n.to_string()),
                        q.ring.clone(),
                        match (q.logging, q.log_used) {
                            (false, _) => "no".to_owned(),
                            (true, true) => "yes".to_owned(),
                            (true, false) => "yes (not the used ring)".to_owned(),
                        },
                    ]
                })
                .collect();
            let t = table(
                &[
                    "QUEUE",
                    "ENABLED",
                    "STARTED",
                    "SIZE",
                    "PMD",
                    "RING",
                    "DIRTY LOG",
                ],
                &[true, false, false, true, true, false, false],
                &rows,
            );
            for line in t.lines() {
                let _ = writeln!(out, "    {line}");
            }
        }
    }
    for d in &reply.devices {
        render_device(&mut out, d);
    }
    out
}

fn render_device(out: &mut String, d: &DeviceInfo) {
    let vlan = d
        .vlan
        .map_or("untagged".to_owned(), |v| format!("vlan {v}"));
    if let Some(u) = &d.uplink {
        let link = if u.link.up {
            let speed = if u.link.speed_mbps > 0 {
                format!(" {} Mb/s", u.link.speed_mbps)
            } else {
                String::new()
            };
            let duplex = if u.link.full_duplex {
                " full-duplex"
            } else {
                " half-duplex"
            };
            format!("up{speed}{duplex}")
        } else {
            "down".to_owned()
        };
        let role = if u.role == "bridged" {
            format!("bridged, {vlan}")
        } else {
            u.role.clone()
        };
        let _ = writeln!(
            out,
            "{}: uplink {} ({}), {role}, link {link}",
            d.name, u.devargs, u.driver
        );
        let _ = writeln!(
            out,
            "  mac: {}, mtu: {}, rx pmd: {}",
            u.mac, u.mtu, u.rx_pmd
        );
        let counters: Vec<String> = u
            .device_counters
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if !counters.is_empty() {
            let _ = writeln!(out, "  device counters: {}", counters.join(" "));
        }
    }
    if let Some(t) = &d.tunnel {
        let _ = writeln!(
            out,
            "{}: vxlan vni {} from {} over {}, {vlan}{}",
            d.name,
            t.vni,
            t.local,
            t.uplink,
            if t.evpn {
                ", remotes from BGP EVPN"
            } else {
                ""
            }
        );
        for r in &t.remotes {
            match &r.mac {
                Some(m) => {
                    let _ = writeln!(out, "  remote {} at {m}", r.ip);
                }
                None => {
                    let _ = writeln!(out, "  remote {} unresolved (ARP pending)", r.ip);
                }
            }
        }
        let _ = writeln!(
            out,
            "  largest inner frame: {} bytes, learned inner MACs: {}",
            t.max_inner_frame, t.learned_macs
        );
    }
}

pub(crate) fn render_stats(reply: &StatsReply) -> String {
    if reply.ports.is_empty() {
        return "no ports\n".to_owned();
    }
    let rows: Vec<Vec<String>> = reply
        .ports
        .iter()
        .map(|p| {
            let total: u64 = p.drops.values().sum();
            let reasons: Vec<String> = p
                .drops
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(r, n)| format!("{r}={n}"))
                .collect();
            let drops = if reasons.is_empty() {
                total.to_string()
            } else {
                format!("{total} ({})", reasons.join(", "))
            };
            vec![
                p.name.clone(),
                p.rx_packets.to_string(),
                p.rx_bytes.to_string(),
                p.tx_packets.to_string(),
                p.tx_bytes.to_string(),
                drops,
            ]
        })
        .collect();
    table(
        &[
            "PORT",
            "RX_PACKETS",
            "RX_BYTES",
            "TX_PACKETS",
            "TX_BYTES",
            "DROPS",
        ],
        &[false, true, true, true, true, false],
        &rows,
    )
}

pub(crate) fn render_fdb(reply: &FdbReply) -> String {
    let rows: Vec<Vec<String>> = reply
        .entries
        .iter()
        .map(|e| {
            vec![
                reply
                    .port_names
                    .get(&e.port)
                    .cloned()
                    .unwrap_or_else(|| e.port.to_string()),
                e.vlan.to_string(),
                format_mac(e.mac),
                e.age_secs.to_string(),
            ]
        })
        .collect();
    let mut out = table(
        &["PORT", "VLAN", "MAC", "AGE"],
        &[false, true, false, true],
        &rows,
    );
    let c = &reply.counters;
    let _ = writeln!(
        out,
        "{} entries; learned {}, moved {}, table full {}, expired {}, flushed {}",
        reply.entries.len(),
        c.learned,
        c.moved,
        c.full,
        c.expired,
        c.flushed
    );
    out
}

fn percent(part: u64, total: u64) -> String {
    if total == 0 {
        "0.00%".to_owned()
    } else {
        // f64 is exact far beyond any cycle count a run can reach (2^53 cycles = 36 days at
        // 3 GHz), and a ratio needs no more.
        format!("{:.2}%", part as f64 * 100.0 / total as f64)
    }
}

const NO_PMDS: &str = "no pmd threads\n";

/// `pmd thread ID core_id CORE`, as Open vSwitch heads a poll thread's section.
fn pmd_heading(id: usize, core: Option<usize>) -> String {
    match core {
        Some(c) => format!("pmd thread {id} core_id {c}"),
        None => format!("pmd thread {id} unpinned"),
    }
}

/// Laid out like Open vSwitch's `ovs-appctl dpif-netdev/pmd-stats-show`, so operators who
/// know that output can read this one.
pub(crate) fn render_pmd_stats(reply: &PmdStatsReply) -> String {
    let mut out = String::new();
    if let Some(hz) = reply.tsc_hz {
        let _ = writeln!(out, "cycles are TSC cycles at {:.1} MHz", hz as f64 / 1e6);
    }
    if reply.pmds.is_empty() {
        out.push_str(NO_PMDS);
        return out;
    }
    for p in &reply.pmds {
        let total = p.busy_cycles.saturating_add(p.idle_cycles);
        let _ = writeln!(out, "{}:", pmd_heading(p.id, p.core));
        let _ = writeln!(out, "  packets received: {}", p.packets);
        let _ = writeln!(out, "  iterations: {}", p.iterations);
        if p.iterations > 0 {
            let _ = writeln!(
                out,
                "  avg. packets per iteration: {:.2}",
                p.packets as f64 / p.iterations as f64
            );
        }
        let _ = writeln!(
            out,
            "  idle cycles: {} ({})",
            p.idle_cycles,
            percent(p.idle_cycles, total)
        );
        let _ = writeln!(
            out,
            "  processing cycles: {} ({})",
            p.busy_cycles,
            percent(p.busy_cycles, total)
        );
        if p.packets > 0 {
            let _ = writeln!(
                out,
                "  avg cycles per packet: {:.2} ({total}/{})",
                p.cycles_per_packet, p.packets
            );
            let _ = writeln!(
                out,
                "  avg processing cycles per packet: {:.2} ({}/{})",
                p.busy_cycles as f64 / p.packets as f64,
                p.busy_cycles,
                p.packets
            );
        }
        let queues = if p.rx_queues.is_empty() {
            "none".to_owned()
        } else {
            p.rx_queues.join(" ")
        };
        let _ = writeln!(out, "  rx queues: {queues}");
    }
    out
}

/// One section per poll thread, its queues as a table, in the spirit of Open vSwitch's
/// `dpif-netdev/pmd-rxq-show`.
pub(crate) fn render_rxq_show(r: &RxqShowReply) -> String {
    let mut out = String::new();
    if r.intervals == 0 {
        let _ = writeln!(
            out,
            "no load measured yet: the first {} s interval has not ended",
            r.interval_secs
        );
    } else {
        let secs = r.tsc_hz.filter(|&hz| hz > 0).map_or(String::new(), |hz| {
            format!(" ({:.1} s)", r.window_cycles as f64 / hz as f64)
        });
        let _ = writeln!(
            out,
            "load over the last {} interval(s) of {} s{secs}; usage: share of the poll thread's time",
            r.intervals, r.interval_secs
        );
    }
    if r.pmds.is_empty() {
        out.push_str(NO_PMDS);
        return out;
    }
    for p in &r.pmds {
        let _ = writeln!(
            out,
            "{}: {:.2}% busy",
            pmd_heading(p.id, p.core),
            p.busy_percent
        );
        if p.queues.is_empty() {
            out.push_str("  no queues\n");
            continue;
        }
        let rows: Vec<Vec<String>> = p
            .queues
            .iter()
            .map(|q| {
                let (queue, state) = if q.pinned {
                    ("rx".to_owned(), "pinned")
                } else if q.running {
                    (q.queue.to_string(), "running")
                } else {
                    (q.queue.to_string(), "stopped")
                };
                vec![
                    q.port.clone(),
                    queue,
                    state.to_owned(),
                    format!("{:.2}%", q.usage_percent),
                ]
            })
            .collect();
        let t = table(
            &["PORT", "QUEUE", "STATE", "USAGE"],
            &[false, true, false, true],
            &rows,
        );
        for line in t.lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    out
}

pub(crate) fn render_rebalance(r: &RebalanceReply) -> String {
    let mut out = String::new();
    if r.moves.is_empty() {
        out.push_str(
            "nothing to move: no placement the plan finds lowers the busiest poll thread's load\n",
        );
    } else {
        let verb = if r.applied {
            "moved"
        } else {
            "dry run: would move"
        };
        let _ = writeln!(out, "{verb} {} queue(s):", r.moves.len());
        for m in &r.moves {
            let _ = writeln!(
                out,
                "  {} queue {}: pmd {} -> pmd {} ({:.2}%)",
                m.port, m.queue, m.from_pmd, m.to_pmd, m.usage_percent
            );
        }
    }
    let _ = writeln!(
        out,
        "estimated load per poll thread, from the last {} interval(s):",
        r.intervals
    );
    for p in &r.pmds {
        let _ = writeln!(
            out,
            "  pmd {}: {:.2}% -> {:.2}%",
            p.id, p.before_percent, p.after_percent
        );
    }
    out
}

pub(crate) fn render_channels(r: &ChannelsReply) -> String {
    if !r.enabled {
        return "the fast path is off (start the switch with --hooks and --fastpath-manifest)\n"
            .to_owned();
    }
    if r.channels.is_empty() {
        return "no fast-path channels\n".to_owned();
    }
    let mut out = String::new();
    for c in &r.channels {
        let _ = writeln!(
            out,
            "channel {} ({}, notify {}): owner {} -> user {}, {} s\n  sent {} packets {} bytes, {} not sent (queue full)\n  received {} packets {} bytes, {} refused descriptor chains",
            c.id,
            c.mode,
            c.notify,
            c.owner,
            c.user,
            c.age_secs,
            c.sent_packets,
            c.sent_bytes,
            c.sender_drops,
            c.received_packets,
            c.received_bytes,
            c.device_errors
        );
    }
    out
}
