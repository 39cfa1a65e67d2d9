//! Prometheus metrics over HTTP (`vswitch --metrics [ADDR:]PORT`): `GET /metrics` answers the
//! exposition text (OpenMetrics) of the same snapshots `vswitchctl stats`, `pmd-stats`, `fdb`
//! and `channels` show, so the two always agree.
//!
//! The server is one thread of its own (tiny_http), never a poll thread: a scrape reads the
//! counters the poll threads publish, as the control socket does, and costs the data path
//! nothing. The exposition is built per scrape with prometheus-client, from the snapshot.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::ctl::CtlHandler;

/// How often the server thread looks at the stop flag while no scrape comes.
const POLL: Duration = Duration::from_millis(100);
/// The content type prometheus-client's text encoder produces.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(&'static str, String)>;

/// Counters of one kind, by label set, registered under `name`.
fn counters(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Counter> {
    let f = Family::<Labels, Counter>::default();
    registry.register(name, help, f.clone());
    f
}

fn gauges(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Gauge> {
    let f = Family::<Labels, Gauge>::default();
    registry.register(name, help, f.clone());
    f
}

fn set(f: &Family<Labels, Counter>, labels: Labels, v: u64) {
    f.get_or_create(&labels).inc_by(v);
}

fn set_gauge(f: &Family<Labels, Gauge>, labels: Labels, v: u64) {
    f.get_or_create(&labels)
        .set(i64::try_from(v).unwrap_or(i64::MAX));
}

/// The exposition text of the switch's state now.
pub fn render(h: &dyn CtlHandler) -> String {
    let mut r = Registry::default();
    let rx_packets = counters(
        &mut r,
        "vswitch_port_rx_packets",
        "Frames the switch received from the port (the guest's transmit).",
    );
    let rx_bytes = counters(
        &mut r,
        "vswitch_port_rx_bytes",
        "Bytes the switch received from the port.",
    );
    let tx_packets = counters(
        &mut r,
        "vswitch_port_tx_packets",
        "Frames the switch delivered to the port (the guest's receive).",
    );
    let tx_bytes = counters(
        &mut r,
        "vswitch_port_tx_bytes",
        "Bytes the switch delivered to the port.",
    );
    let drops = counters(
        &mut r,
        "vswitch_port_drops",
        "Frames dropped, by reason; each dropped frame counts once.",
    );
    let ring_errors = counters(&mut r, "vswitch_port_ring_errors", "The rings' own refusals by reason (rx_: guest transmit queues, tx_: guest receive queues).");
    let messages = counters(
        &mut r,
        "vswitch_port_vhost_user_messages",
        "vhost-user messages: requests served, refused, unknown.",
    );
    for p in h.stats().ports {
        let port = || vec![("port", p.name.clone())];
        set(&rx_packets, port(), p.rx_packets);
        set(&rx_bytes, port(), p.rx_bytes);
        set(&tx_packets, port(), p.tx_packets);
        set(&tx_bytes, port(), p.tx_bytes);
        for (reason, v) in &p.drops {
            set(
                &drops,
                vec![("port", p.name.clone()), ("reason", reason.clone())],
                *v,
            );
        }
        for (reason, v) in &p.ring_errors {
            set(
                &ring_errors,
                vec![("port", p.name.clone()), ("reason", reason.clone())],
                *v,
            );
        }
        for (kind, v) in &p.control {
            set(
                &messages,
                vec![("port", p.name.clone()), ("kind", kind.clone())],
                *v,
            );
        }
    }

    let pmd_packets = counters(
        &mut r,
        "vswitch_pmd_packets",
        "Frames a poll thread took from its queues.",
    );
    let busy = counters(
        &mut r,
        "vswitch_pmd_busy_cycles",
        "TSC cycles of a poll thread's iterations that moved frames.",
    );
    let idle = counters(
        &mut r,
        "vswitch_pmd_idle_cycles",
        "TSC cycles of a poll thread's iterations that found nothing.",
    );
    let iterations = counters(
        &mut r,
        "vswitch_pmd_iterations",
        "Iterations of a poll thread's loop.",
    );
    let pmds = h.pmd_stats();
    for p in &pmds.pmds {
        let pmd = || vec![("pmd", p.id.to_string())];
        set(&pmd_packets, pmd(), p.packets);
        set(&busy, pmd(), p.busy_cycles);
        set(&idle, pmd(), p.idle_cycles);
        set(&iterations, pmd(), p.iterations);
    }
    if let Some(hz) = pmds.tsc_hz {
        let g = gauges(
            &mut r,
            "vswitch_tsc_hz",
            "TSC frequency, to turn cycles into time.",
        );
        set_gauge(&g, Vec::new(), hz);
    }

    let fdb = h.fdb();
    let size = gauges(
        &mut r,
        "vswitch_fdb_entries",
        "Live MAC learning table entries.",
    );
    set_gauge(&size, Vec::new(), fdb.entries.len() as u64);
    let events = counters(
        &mut r,
        "vswitch_fdb_events",
        "MAC learning table events: learned, moved, full, contended, expired, flushed.",
    );
    let c = &fdb.counters;
    for (event, v) in [
        ("learned", c.learned),
        ("moved", c.moved),
        ("full", c.full),
        ("contended", c.contended),
        ("expired", c.expired),
        ("flushed", c.flushed),
    ] {
        set(&events, vec![("event", event.to_owned())], v);
    }

    let ch = h.channels();
    let n = gauges(
        &mut r,
        "vswitch_fastpath_channels",
        "Fast-path channels granted by the hooks.",
    );
    set_gauge(&n, Vec::new(), ch.channels.len() as u64);
    let sent = counters(
        &mut r,
        "vswitch_fastpath_sent_packets",
        "Frames the sender put into a fast-path channel.",
    );
    let sent_bytes = counters(
        &mut r,
        "vswitch_fastpath_sent_bytes",
        "Bytes the sender put into a fast-path channel.",
    );
    let sender_drops = counters(
        &mut r,
        "vswitch_fastpath_sender_drops",
        "Frames a fast-path sender dropped (channel full).",
    );
    let received = counters(
        &mut r,
        "vswitch_fastpath_received_packets",
        "Frames the receiver took from a fast-path channel.",
    );
    let received_bytes = counters(
        &mut r,
        "vswitch_fastpath_received_bytes",
        "Bytes the receiver took from a fast-path channel.",
    );
    let device_errors = counters(
        &mut r,
        "vswitch_fastpath_device_errors",
        "Bad descriptors seen in a fast-path channel.",
    );
    for c in &ch.channels {
        let l = || {
            vec![
                ("channel", c.id.to_string()),
                ("mode", c.mode.clone()),
                ("owner", c.owner.clone()),
                ("user", c.user.clone()),
            ]
        };
        set(&sent, l(), c.sent_packets);
        set(&sent_bytes, l(), c.sent_bytes);
        set(&sender_drops, l(), c.sender_drops);
        set(&received, l(), c.received_packets);
        set(&received_bytes, l(), c.received_bytes);
        set(&device_errors, l(), c.device_errors);
    }

    evpn_metrics(&mut r, &h.evpn());

    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &r);
    out
}

/// The EVPN segments (`--evpn`): their MAC counts and refused control input.
fn evpn_metrics(r: &mut Registry, e: &crate::evpn::EvpnReply) {
    let local = gauges(
        r,
        "vswitch_evpn_local_macs",
        "MACs learned on guest ports and exported to BGP (type-2 routes).",
    );
    let remote = gauges(
        r,
        "vswitch_evpn_remote_macs",
        "MACs from BGP installed behind remote VTEPs.",
    );
    let flood = gauges(
        r,
        "vswitch_evpn_flood_vteps",
        "Remote VTEPs in the flood list (type-3 routes).",
    );
    let held = gauges(
        r,
        "vswitch_evpn_held_macs",
        "Remote MACs BGP withdrew, still used (--evpn-hold).",
    );
    let refused = counters(
        r,
        "vswitch_evpn_refused",
        "FDB entries of the EVPN mirror refused, by reason.",
    );
    let kernel = counters(
        r,
        "vswitch_evpn_kernel_errors",
        "Failed writes to the EVPN mirror's kernel objects.",
    );
    for g in &e.segments {
        let l = || vec![("segment", g.port.clone()), ("vni", g.vni.to_string())];
        set_gauge(&local, l(), g.local_macs.len() as u64);
        set_gauge(&remote, l(), g.remote_macs.len() as u64);
        set_gauge(&flood, l(), g.flood_vteps.len() as u64);
        set_gauge(&held, l(), g.held_macs as u64);
        set(&kernel, l(), g.kernel_errors);
        let f = &g.refused;
        for (reason, n) in [
            ("unknown_vni", f.unknown_vni),
            ("own_vtep", f.own_vtep),
            ("bad_entry", f.bad_entry),
            ("not_extern_learn", f.not_extern_learn),
            ("mac_limit", f.mac_limit),
            ("vtep_limit", f.vtep_limit),
        ] {
            let mut labels = l();
            labels.push(("reason", reason.to_owned()));
            set(&refused, labels, n);
        }
    }
}

/// A running metrics server; [`MetricsServer::stop`] ends it.
pub struct MetricsServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Scrapes answered, for the log at the end.
    scrapes: Arc<AtomicU64>,
}

/// Binds `addr` and serves `/metrics` from `handler` in a thread of its own.
pub fn serve(addr: SocketAddr, handler: Arc<dyn CtlHandler>) -> Result<MetricsServer, String> {
    let server = tiny_http::Server::http(addr)
        .map_err(|e| format!("metrics server on {addr}: {e} (is the port in use?)"))?;
    let addr = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| format!("metrics server on {addr}: not an IP listener"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let scrapes = Arc::new(AtomicU64::new(0));
    let (s, n) = (stop.clone(), scrapes.clone());
    let thread = std::thread::Builder::new()
        .name("vswitch-metrics".to_owned())
        .spawn(move || run(&server, &*handler, &s, &n))
        .map_err(|e| format!("spawning the metrics thread: {e}"))?;
    Ok(MetricsServer {
        addr,
        stop,
        thread: Some(thread),
        scrapes,
    })
}

fn run(server: &tiny_http::Server, handler: &dyn CtlHandler, stop: &AtomicBool, n: &AtomicU64) {
    while !stop.load(Ordering::Relaxed) {
        let req = match server.recv_timeout(POLL) {
            Ok(Some(req)) => req,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!("metrics server: {e}");
                std::thread::sleep(POLL);
                continue;
            }
        };
        let path = req.url().split('?').next().unwrap_or("");
        let resp = if *req.method() != tiny_http::Method::Get {
            tiny_http::Response::from_string("only GET /metrics is served\n").with_status_code(405)
        } else if path == "/metrics" {
            n.fetch_add(1, Ordering::Relaxed);
            let body = render(handler);
            let ct = tiny_http::Header::from_bytes("Content-Type", CONTENT_TYPE)
                .expect("a constant, valid header");
            tiny_http::Response::from_string(body).with_header(ct)
        } else {
            tiny_http::Response::from_string("not found: the metrics are at /metrics\n")
                .with_status_code(404)
        };
        if let Err(e) = req.respond(resp) {
            tracing::debug!("metrics scrape: answering failed: {e}");
        }
    }
}

impl MetricsServer {
    /// Stops the server and waits for its thread.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        tracing::info!(
            "metrics server stopped after {} scrape(s)",
            self.scrapes.load(Ordering::Relaxed)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::testing::FakeSwitch;
    use std::io::{Read, Write};

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn evpn_segments_exposed() {
        let mut g = crate::evpn::EvpnSegmentInfo {
            port: "vx0".into(),
            vni: 42,
            flood_vteps: vec!["10.0.0.2".into()],
            ..Default::default()
        };
        g.refused.own_vtep = 3;
        let mut r = Registry::default();
        evpn_metrics(
            &mut r,
            &crate::evpn::EvpnReply {
                segments: vec![g],
                undecodable_messages: 0,
            },
        );
        let mut text = String::new();
        encode(&mut text, &r).unwrap();
        for line in [
            "vswitch_evpn_flood_vteps{segment=\"vx0\",vni=\"42\"} 1",
            "vswitch_evpn_refused_total{segment=\"vx0\",vni=\"42\",reason=\"own_vtep\"} 3",
            "vswitch_evpn_remote_macs{segment=\"vx0\",vni=\"42\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in\n{text}"
            );
        }
    }

    #[test]
    fn exposition_carries_every_counter_of_the_snapshots() {
        let text = render(&FakeSwitch::default());
        for line in [
            "vswitch_port_rx_packets_total{port=\"vm1\"} 10",
            "vswitch_port_tx_bytes_total{port=\"vm1\"} 576",
            "vswitch_port_drops_total{port=\"vm1\",reason=\"tx_ring_full\"} 1",
            "vswitch_pmd_busy_cycles_total{pmd=\"0\"} 250000",
            "vswitch_pmd_idle_cycles_total{pmd=\"0\"} 750000",
            "vswitch_pmd_packets_total{pmd=\"0\"} 1000",
            "vswitch_fdb_entries 1",
            "vswitch_fdb_events_total{event=\"learned\"} 1",
            "vswitch_fastpath_channels 0",
            "vswitch_tsc_hz 2000000000",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in\n{text}"
            );
        }
        assert!(text.contains("# HELP vswitch_port_drops"), "{text}");
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
    }

    #[test]
    fn served_over_http_and_stopped() {
        let fake: Arc<dyn CtlHandler> = Arc::new(FakeSwitch::default());
        let server = serve("127.0.0.1:0".parse().unwrap(), fake).unwrap();
        let r = get(server.addr, "/metrics");
        assert!(r.starts_with("HTTP/1.0 200"), "{r}");
        assert!(r.contains("openmetrics-text"), "{r}");
        assert!(
            r.contains("vswitch_port_rx_packets_total{port=\"vm1\"} 10"),
            "{r}"
        );
        let addr = server.addr;
        server.stop();
        // tiny_http's accept thread drops the listener after `stop` returns (its Server's drop
        // wakes the thread and does not wait), so the port closes soon after, not at once.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(addr).is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "still listening after stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn test_metrics_unknown_path() {
        let fake: Arc<dyn CtlHandler> = Arc::new(FakeSwitch::default());
        let server = serve("127.0.0.1:0".parse().unwrap(), fake).unwrap();
        assert!(get(server.addr, "/").starts_with("HTTP/1.0 404"));
        let mut s = std::net::TcpStream::connect(server.addr).unwrap();
        write!(s, "POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.0 405"), "{out}");
        server.stop();
    }

    #[test]
    fn test_metrics_port_in_use() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fake: Arc<dyn CtlHandler> = Arc::new(FakeSwitch::default());
        let err = serve(taken.local_addr().unwrap(), fake).err().unwrap();
        assert!(err.contains("metrics server on 127.0.0.1:"), "{err}");
    }
}
