//! FRR (zebra + bgpd) as a host's BGP EVPN control plane in a test namespace: iBGP to the
//! given peers, `address-family l2vpn evpn` with `advertise-all-vni`, daemons run in the
//! foreground as children of the test (killed on drop), queried with vtysh.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use super::netns::Netns;
use super::{wait_for, TestDir};

pub const ZEBRA: &str = "/usr/lib/frr/zebra";
pub const BGPD: &str = "/usr/lib/frr/bgpd";

/// FRR's daemons and vtysh; under CI missing ones fail the test (.ci/run installs `frr`).
pub fn have_frr() -> bool {
    let ok = Path::new(ZEBRA).exists()
        && Path::new(BGPD).exists()
        && std::process::Command::new("vtysh")
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
            panic!("FRR (zebra, bgpd, vtysh) is required under CI; .ci/run installs `frr`");
        }
        eprintln!("\n*** SKIPPED: FRR (apt-get install frr) not installed ***\n");
    }
    ok
}

/// zebra and bgpd of one host, in its namespace, with their sockets, pid files and log in a
/// directory of their own (FRR drops privileges to user `frr`, which must write there).
pub struct Frr {
    ns: String,
    me: Ipv4Addr,
    dir: TestDir,
    conf: PathBuf,
    daemons: Vec<Child>,
}

impl Frr {
    pub fn start(ns: &Netns, tag: &str, me: Ipv4Addr, peers: &[Ipv4Addr]) -> Frr {
        let dir = TestDir::new(&format!("frr-{tag}"));
        let chown = std::process::Command::new("chown")
            .args(["frr:frr", &dir.path().display().to_string()])
            .status()
            .expect("chown");
        assert!(chown.success(), "chown frr {}", dir.path().display());
        let conf = dir.join("frr.conf");
        let mut c = format!(
            "frr defaults traditional\nhostname {tag}\nlog file {}/frr.log informational\n!\n\
             router bgp 65000\n bgp router-id {me}\n no bgp default ipv4-unicast\n \
",
            dir.path().display()
        );
        for p in peers {
            c.push_str(&format!(
                " neighbor {p} remote-as 65000\n neighbor {p} timers 1 3\n neighbor {p} timers connect 1\n"
            ));
        }
        c.push_str(" address-family l2vpn evpn\n");
        for p in peers {
            c.push_str(&format!("  neighbor {p} activate\n"));
        }
        c.push_str("  advertise-all-vni\n exit-address-family\n!\n");
        std::fs::write(&conf, c).expect("frr.conf");
        let mut f = Frr {
            ns: ns.name.clone(),
            me,
            dir,
            conf,
            daemons: Vec::new(),
        };
        f.spawn();
        f
    }

    pub fn spawn(&mut self) {
        let me = self.me;
        let d = self.dir.path().to_path_buf();
        let common = |daemon: &str| -> Vec<String> {
            vec![
                "-N".into(),
                self.ns.clone(),
                "-f".into(),
                self.conf.display().to_string(),
                "-i".into(),
                d.join(format!("{daemon}.pid")).display().to_string(),
                "-z".into(),
                d.join("zserv.api").display().to_string(),
                "--vty_socket".into(),
                d.display().to_string(),
            ]
        };
        for (daemon, extra) in [
            (ZEBRA, vec![]),
            (BGPD, vec!["-l".to_owned(), me.to_string()]),
        ] {
            let name = Path::new(daemon).file_name().unwrap().to_string_lossy();
            let out = std::fs::File::create(d.join(format!("{name}.out"))).expect("log");
            let err = out.try_clone().expect("dup");
            let child = std::process::Command::new("ip")
                .args(["netns", "exec", &self.ns, daemon])
                .args(common(&name))
                .args(extra)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .expect("start FRR daemon");
            self.daemons.push(child);
            if daemon == ZEBRA {
                let z = d.join("zserv.api");
                assert!(
                    wait_for(Duration::from_secs(10), || z.exists()),
                    "zebra did not come up\n{}",
                    self.log()
                );
            }
        }
    }

    /// SIGKILL to both daemons: what they installed stays in the kernel, as after a crash.
    pub fn kill(&mut self) {
        for mut c in self.daemons.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        for f in ["zserv.api", "zebra.vty", "bgpd.vty"] {
            let _ = std::fs::remove_file(self.dir.join(f));
        }
    }

    pub fn vtysh(&self, cmd: &str) -> String {
        let o = std::process::Command::new("ip")
            .args(["netns", "exec", &self.ns, "vtysh", "--vty_socket"])
            .arg(self.dir.path())
            .args(["-c", cmd])
            .output()
            .expect("vtysh");
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        for f in ["zebra.out", "bgpd.out", "frr.log"] {
            s += &format!(
                "--- {f} ---\n{}\n",
                std::fs::read_to_string(self.dir.join(f)).unwrap_or_default()
            );
        }
        s
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log());
        }
        self.kill();
    }
}
