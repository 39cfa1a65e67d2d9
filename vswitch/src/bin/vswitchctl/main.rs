//! `vswitchctl`: the operator's command-line client for a running `vswitch`'s control socket.
//! Prints tables for people and, with `--json`, the switch's reply for scripts.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgGroup, Parser, Subcommand};
use vswitch::config::{PortMode, PortSpec};
use vswitch::ctl::{CtlClient, CtlError, RebalanceArgs, Request};

mod capture;
mod evpn;
mod render;
#[cfg(test)]
mod tests;

use render::{
    render_channels, render_fdb, render_pmd_stats, render_rebalance, render_rxq_show, render_show,
    render_stats,
};

const AFTER_HELP: &str = "\
EXAMPLES:
  vswitchctl --ctl /run/vswitch/ctl.sock show
  vswitchctl --ctl /run/vswitch/ctl.sock pmd-stats
  vswitchctl --ctl /run/vswitch/ctl.sock evpn --json | jq '.segments[].remote_macs'
  vswitchctl --ctl /run/vswitch/ctl.sock pmd-rxq-show
  vswitchctl --ctl /run/vswitch/ctl.sock pmd-rxq-rebalance --dry-run
  vswitchctl --ctl /run/vswitch/ctl.sock stats --json | jq '.ports[].drops'
  vswitchctl --ctl /run/vswitch/ctl.sock add-port --name vm3 --server /run/vswitch/vm3.sock --vlan 20 --queues 2
  VSWITCH_CTL=/run/vswitch/ctl.sock vswitchctl del-port vm3
  vswitchctl --ctl /run/vswitch/ctl.sock capture vm1 --count 100 -w /tmp/vm1.pcap
  vswitchctl --ctl /run/vswitch/ctl.sock capture vm1 --direction rx -w - | tcpdump -nr -

EXIT STATUS:
  0 success, 1 the switch refused the request (its message is printed),
  2 bad command line, 3 the switch could not be reached or answered nonsense,
  4 the capture file could not be written.";

#[derive(Debug, Parser)]
#[command(
    name = "vswitchctl",
    version,
    about = "Query and reconfigure a running vswitch through its control socket",
    after_long_help = AFTER_HELP
)]
struct Cli {
    /// The switch's control socket, as given to `vswitch --ctl`.
    #[arg(long, env = "VSWITCH_CTL", value_name = "SOCKETPATH")]
    ctl: PathBuf,

    /// Print the switch's reply as JSON (one object) instead of a table.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ports: mode, socket, VLAN, connection state, negotiated features and queues; uplinks
    /// (device, link state, device counters) and VXLAN tunnels (remote VTEPs).
    Show,
    /// Per-port packet and byte counters (from the switch's side: rx = from the guest)
    /// and drops by reason.
    Stats,
    /// The MAC learning table: port, VLAN, MAC, seconds since last seen.
    Fdb,
    /// Poll-mode threads: packets, busy and idle cycles, cycles per packet, rx queues.
    PmdStats,
    /// Which poll thread polls which queue, and each queue's load ("usage": its share of the
    /// poll thread's time, from the TSC cycles spent on its bursts over the last 6 intervals
    /// of `vswitch --pmd-rxq-interval`, 10 s by default), like Open vSwitch's
    /// `dpif-netdev/pmd-rxq-show`. Queues are virtqueue indices as in `show` (the guest
    /// transmit queue of pair N is 2N+1); an uplink's receive queue (`rx`) is pinned to its
    /// thread.
    PmdRxqShow,
    /// Reassign guest queues to poll threads by the load `pmd-rxq-show` reports: heaviest
    /// first, each to the least loaded thread (Open vSwitch's `cycles` assignment), applied
    /// only when that lowers the busiest thread's load. Each move is logged. A queue moves
    /// without a frame lost or reordered: its old thread stops polling it before the new one
    /// starts, and meanwhile frames wait in the guest's ring. Needs at least two poll threads
    /// and one completed measuring interval.
    PmdRxqRebalance {
        /// Print the plan and move nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Fast-path channels granted by the hooks: owner, user, mode, counters.
    Channels,
    /// BGP EVPN segments (--evpn): per VNI the local MACs exported, the MACs BGP gave and
    /// behind which VTEP, the flood list, and control input refused (by reason).
    Evpn,
    /// Add a vhost-user port to the running switch.
    #[command(group(ArgGroup::new("mode").required(true).args(["server", "client"])))]
    AddPort {
        /// Port name: 1-32 of A-Z a-z 0-9 _ -.
        #[arg(long)]
        name: String,
        /// The switch listens on PATH and the guest's frontend connects.
        #[arg(long, value_name = "PATH")]
        server: Option<PathBuf>,
        /// The switch connects to PATH, where the frontend listens, and reconnects by itself.
        #[arg(long, value_name = "PATH")]
        client: Option<PathBuf>,
        /// Access VLAN, 1..=4094 (default: untagged).
        #[arg(long, value_name = "VID")]
        vlan: Option<u16>,
        /// Maximum queue pairs, 1..=16.
        #[arg(long, value_name = "N", default_value_t = 1)]
        queues: u16,
        /// Allow the port fast-path channels (needs a switch started with --hooks).
        #[arg(long)]
        fastpath: bool,
    },
    /// Remove a port; its guest is disconnected and its MAC addresses forgotten.
    DelPort {
        /// The port's name.
        name: String,
    },
    /// Capture a port's frames into a pcap file (tcpdump, Wireshark), until --count frames or
    /// Ctrl-C. Forwarding never waits for the capture: frames it has no room for are counted
    /// as capture drops in the summary printed at the end.
    Capture {
        /// The port (vhost-user, uplink or tunnel).
        port: String,
        /// rx: frames the switch receives from the port (the guest's transmit); tx: frames it
        /// sends to the port; both.
        #[arg(long, value_name = "DIR", default_value = "both", value_parser = ["rx", "tx", "both"])]
        direction: String,
        /// Stop after N frames (at least 1).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
        /// The pcap file to write, `-` for standard output (`| tcpdump -r -`).
        #[arg(short = 'w', value_name = "FILE")]
        write: PathBuf,
    },
}

/// Why the command failed, mapped to the exit status documented in --help.
#[derive(Debug)]
enum Failure {
    Refused(String),
    Unreachable(String),
    /// A local output (the capture file) could not be written.
    Output(String),
}

impl From<CtlError> for Failure {
    fn from(e: CtlError) -> Self {
        match e {
            CtlError::Refused(m) => Failure::Refused(format!("the switch refused: {m}")),
            CtlError::Output(e) => Failure::Output(format!("writing the capture failed: {e}")),
            other => Failure::Unreachable(other.to_string()),
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match run(&cli) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(Failure::Refused(m)) => {
            eprintln!("vswitchctl: {m}");
            ExitCode::from(1)
        }
        Err(Failure::Unreachable(m)) => {
            eprintln!("vswitchctl: {m}");
            ExitCode::from(3)
        }
        Err(Failure::Output(m)) => {
            eprintln!("vswitchctl: {m}");
            ExitCode::from(4)
        }
    }
}

fn run(cli: &Cli) -> Result<String, Failure> {
    let request = match &cli.command {
        Command::Show => Request::Show,
        Command::Stats => Request::Stats,
        Command::Fdb => Request::Fdb,
        Command::PmdStats => Request::PmdStats,
        Command::PmdRxqShow => Request::PmdRxqShow,
        Command::PmdRxqRebalance { dry_run } => {
            Request::PmdRxqRebalance(RebalanceArgs { dry_run: *dry_run })
        }
        Command::Channels => Request::Channels,
        Command::Evpn => Request::Evpn,
        Command::AddPort {
            name,
            server,
            client,
            vlan,
            queues,
            fastpath,
        } => {
            let (mode, path) = match (server, client) {
                (Some(p), _) => (PortMode::Server, p.clone()),
                (None, Some(p)) => (PortMode::Client, p.clone()),
                (None, None) => unreachable!("clap requires --server or --client"),
            };
            let spec = PortSpec {
                name: name.clone(),
                mode,
                path,
                vlan: *vlan,
                queues: *queues,
                fastpath: *fastpath,
            };
            // The switch checks too; checking here spares a round trip and names the flag.
            spec.validate()
                .map_err(|e| Failure::Refused(format!("add-port: {e}")))?;
            Request::AddPort(spec)
        }
        Command::DelPort { name } => Request::DelPort { name: name.clone() },
        Command::Capture {
            port,
            direction,
            count,
            write,
        } => return capture::run(&cli.ctl, port, direction, *count, write),
    };

    let mut client = CtlClient::connect(&cli.ctl)?;
    let data = client.call(&request)?;
    if cli.json {
        let mut s =
            serde_json::to_string_pretty(&data).map_err(|e| Failure::Unreachable(e.to_string()))?;
        s.push('\n');
        return Ok(s);
    }
    let decode = |e: serde_json::Error| {
        Failure::Unreachable(format!(
            "the switch's reply does not match this vswitchctl ({e}); try --json"
        ))
    };
    Ok(match request {
        Request::Show => render_show(&serde_json::from_value(data).map_err(decode)?),
        Request::Stats => render_stats(&serde_json::from_value(data).map_err(decode)?),
        Request::Fdb => render_fdb(&serde_json::from_value(data).map_err(decode)?),
        Request::PmdStats => render_pmd_stats(&serde_json::from_value(data).map_err(decode)?),
        Request::PmdRxqShow => render_rxq_show(&serde_json::from_value(data).map_err(decode)?),
        Request::PmdRxqRebalance(_) => {
            render_rebalance(&serde_json::from_value(data).map_err(decode)?)
        }
        Request::Channels => render_channels(&serde_json::from_value(data).map_err(decode)?),
        Request::Evpn => evpn::render(&serde_json::from_value(data).map_err(decode)?),
        Request::AddPort(spec) => format!("added port {}\n", spec.name),
        Request::DelPort { name } => format!("deleted port {name}\n"),
        Request::Capture(_) => unreachable!("capture returned above"),
    })
}
