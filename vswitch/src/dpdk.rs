//! DPDK ethdevs as uplink devices: the EAL (initialised once per process), a port opened from
//! devargs (a NIC by PCI address, or a vdev: `net_af_packet0,iface=veth0`, `net_tap0`,
//! `net_ring0`), its mbuf pool, and each poll thread's I/O on it ([`crate::netdev::DevIo`]).
//!
//! The one module of the switch with `unsafe`: every foreign call and every pointer into an
//! mbuf is here, each block with its `// SAFETY:` argument. The fast path makes one foreign call
//! per burst each way (the C shims of `dpdk-sys` do the per-packet mbuf work): receive hands out
//! the mbufs' data in place (frames in several segments are linearised into this thread's
//! scratch buffer), transmit allocates a burst of mbufs at once and sends them at once.
//!
//! Threads: each poll thread's I/O registers it with the EAL (`rte_thread_register`) so that
//! mempool caches work for it. Receive uses queue 0 and only one thread may use it (the first to
//! receive claims it). Transmit queues are one per poll thread when the device has enough;
//! otherwise threads share them, each burst under a try-lock, like a guest's receive queue.

use std::collections::BTreeMap;
use std::ffi::{c_char, CStr, CString};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use dpdk_sys as sys;
use vhost_user::virtq::BURST;

use crate::eth::Mac;
use crate::netdev::{DevIo, LinkInfo, NetDev, TxBufError, TxOutcome, MAX_DEV_FRAME};

/// Receive descriptors per port (adjusted to the device's limits).
const RX_DESC: u16 = 1024;
/// Transmit descriptors per queue (adjusted to the device's limits).
const TX_DESC: u16 = 1024;
/// Mbufs per port's pool (2^n - 1 is the mempool's most efficient size).
const POOL_MBUFS: u32 = 8191;
/// Per-lcore cache of the pool.
const POOL_CACHE: u32 = 256;
/// Free hugepage memory below which the default EAL arguments use `--no-huge`.
const MIN_HUGE_BYTES: u64 = 256 << 20;
/// Memory for the EAL without hugepages (`-m`, MB).
const NO_HUGE_MB: u32 = 512;
/// How many times a poll thread retries a shared transmit queue held by another.
const BUSY_SPINS: u32 = 4096;
/// `BURST` as the u16 the shims count in.
const BURST_U16: u16 = 32;
const _: () = assert!(BURST_U16 as usize == BURST);

/// The outcome of the process's one EAL initialisation.
static EAL: OnceLock<Result<String, String>> = OnceLock::new();
/// Set once `rte_eal_cleanup` ran: no DPDK call may follow.
static CLEANED_UP: Mutex<bool> = Mutex::new(false);

/// The EAL's error of the calling thread, as text.
fn rte_error() -> String {
    // SAFETY: nfv_errno reads this thread's rte_errno; rte_strerror returns a pointer to a
    // static or thread-local string that stays valid until the next call on this thread, and
    // we copy it at once.
    unsafe {
        let e = sys::nfv_errno();
        let s = sys::rte_strerror(e);
        if s.is_null() {
            format!("rte_errno {e}")
        } else {
            CStr::from_ptr(s).to_string_lossy().into_owned()
        }
    }
}

/// Text of a negative errno return value.
fn errno_text(rc: i32) -> String {
    // SAFETY: as in `rte_error`: a string valid until the next call, copied at once.
    unsafe {
        let s = sys::rte_strerror(-rc);
        if s.is_null() {
            format!("error {rc}")
        } else {
            format!("{} ({rc})", CStr::from_ptr(s).to_string_lossy())
        }
    }
}

/// Whether this machine has enough free hugepage memory for the EAL.
pub fn hugepages_available() -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/meminfo") else {
        return false;
    };
    let field = |name: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    field("HugePages_Free:") * field("Hugepagesize:") * 1024 >= MIN_HUGE_BYTES
}

/// The EAL arguments the switch uses when the operator gives none: the main lcore on `core`,
/// no shared files (several switches may run on one host), no telemetry socket, hugepages when
/// enough are free and `--no-huge` otherwise, and no PCI scan unless a port is a PCI device.
pub fn default_eal_args(core: usize, pci: bool) -> Vec<String> {
    let mut a = vec![
        "-l".to_owned(),
        core.to_string(),
        "--in-memory".to_owned(),
        "--no-telemetry".to_owned(),
        "--log-level=notice".to_owned(),
    ];
    if !hugepages_available() {
        a.extend([
            "--no-huge".to_owned(),
            "-m".to_owned(),
            NO_HUGE_MB.to_string(),
        ]);
    }
    if !pci {
        a.push("--no-pci".to_owned());
    }
    a
}

/// Initialises the EAL with `args` (without the program name), once per process; later calls
/// return the first call's outcome. The calling thread's CPU affinity is restored afterwards
/// (the EAL pins it to the main lcore, and every thread it spawns later would inherit that).
pub fn init(args: &[String]) -> Result<String, String> {
    EAL.get_or_init(|| {
        let mut argv: Vec<*mut c_char> = Vec::with_capacity(args.len() + 1);
        for a in std::iter::once("vswitch").chain(args.iter().map(String::as_str)) {
            let c = CString::new(a).map_err(|_| format!("EAL argument `{a}` contains a NUL"))?;
            // The EAL may keep pointers into argv for the life of the process.
            argv.push(c.into_raw());
        }
        let argc = i32::try_from(argv.len()).map_err(|_| "too many EAL arguments".to_owned())?;
        let pid = nix::unistd::Pid::from_raw(0);
        let affinity = nix::sched::sched_getaffinity(pid).ok();
        // SAFETY: argv holds argc valid NUL-terminated strings, leaked so they outlive the EAL
        // (which may permute the array and keep pointers into it); the array itself is leaked
        // below for the same reason. rte_eal_init runs once per process (OnceLock).
        let rc = unsafe { sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        let err = (rc < 0).then(rte_error);
        std::mem::forget(argv);
        if let Some(a) = affinity {
            let _ = nix::sched::sched_setaffinity(pid, &a);
        }
        if let Some(e) = err {
            return Err(format!(
                "DPDK EAL initialisation failed: {e} (arguments: {args:?})"
            ));
        }
        // SAFETY: rte_version returns a static string.
        let version = unsafe { CStr::from_ptr(sys::rte_version()) }
            .to_string_lossy()
            .into_owned();
        tracing::info!("{version} EAL up ({})", args.join(" "));
        register_thread();
        Ok(version)
    })
    .clone()
}

/// Releases the EAL's resources at exit, after every port is closed. No DPDK call may follow.
pub fn cleanup() {
    let mut done = CLEANED_UP.lock().unwrap_or_else(|p| p.into_inner());
    if !*done && matches!(EAL.get(), Some(Ok(_))) {
        // SAFETY: the EAL was initialised; every port was closed by its owner before (the
        // switch's shutdown drops them first) and no other DPDK call follows (flag).
        unsafe {
            sys::rte_eal_cleanup();
        }
        *done = true;
    }
}

thread_local! {
    static REGISTERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Gives the calling thread an lcore id (for the mempool caches), once. A thread that cannot get
/// one still works, through the pool's shared ring.
fn register_thread() {
    if REGISTERED.with(|r| r.replace(true)) {
        return;
    }
    // SAFETY: the EAL is initialised (callers come after `init`); registering a thread twice
    // is prevented by the thread-local flag.
    let rc = unsafe { sys::rte_thread_register() };
    if rc < 0 {
        tracing::debug!("rte_thread_register: {}", rte_error());
    }
}

/// Rings under `net_ring` ports we made ([`EthDev::crossover`]), freed after both ports.
struct Rings(Vec<*mut sys::rte_ring>);

// SAFETY: rte_rings are multi-thread safe (created multi-producer/multi-consumer); the pointers
// are only freed, once, in Drop.
unsafe impl Send for Rings {}
// SAFETY: as above.
unsafe impl Sync for Rings {}

impl Drop for Rings {
    fn drop(&mut self) {
        if *CLEANED_UP.lock().unwrap_or_else(|p| p.into_inner()) {
            return;
        }
        for &r in &self.0 {
            // SAFETY: rings we created; both ports over them are closed (each holds this Arc
            // until after its close).
            unsafe { sys::rte_ring_free(r) };
        }
    }
}

/// An open DPDK port with its mbuf pool.
pub struct EthDev {
    port: u16,
    /// For a crossover port: its rings, released after the port is closed.
    _rings: Option<Arc<Rings>>,
    name: String,
    driver: String,
    pool: *mut sys::rte_mempool,
    mac: Mac,
    mtu: usize,
    nb_tx: u16,
    /// Poll threads share transmit queues (fewer queues than threads): take `tx_busy` first.
    tx_shared: bool,
    tx_busy: Box<[AtomicBool]>,
    /// A poll thread's I/O owns the receive queue.
    rx_claimed: AtomicBool,
}

// SAFETY: `pool` is a DPDK mempool, safe to use from any thread (multi-producer/multi-consumer
// ring with per-lcore caches); the port id is a plain number; ethdev control calls made here
// (stats, link) are safe alongside the data path; the queues themselves are used only through
// `EthIo` under the rules in the module doc.
unsafe impl Send for EthDev {}
// SAFETY: as above; shared access goes through atomics or thread-safe DPDK calls.
unsafe impl Sync for EthDev {}

/// Ethdev ports that are valid now.
fn valid_ports() -> Vec<u16> {
    (0..u16::try_from(sys::RTE_MAX_ETHPORTS).unwrap_or(32))
        // SAFETY: a query on a port id; invalid ids return 0.
        .filter(|&p| unsafe { sys::rte_eth_dev_is_valid_port(p) } != 0)
        .collect()
}

fn port_name(port: u16) -> String {
    let mut buf = [0 as c_char; 64];
    // SAFETY: buf holds RTE_ETH_NAME_MAX_LEN (64) bytes as the call requires.
    let rc = unsafe { sys::rte_eth_dev_get_name_by_port(port, buf.as_mut_ptr()) };
    if rc != 0 {
        return format!("port{port}");
    }
    // SAFETY: the call wrote a NUL-terminated name into buf.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

impl EthDev {
    /// Probes the device `devargs` (hotplug: the EAL must be up), configures one receive queue
    /// and a transmit queue per poll thread (as many as the device has) and, when given, its IP
    /// MTU, and starts it in promiscuous mode.
    pub fn open(devargs: &str, pmds: usize, mtu: Option<u16>) -> Result<Arc<EthDev>, String> {
        if !matches!(EAL.get(), Some(Ok(_))) {
            return Err("the DPDK EAL is not initialised".to_owned());
        }
        let dname = devargs.split(',').next().unwrap_or(devargs).to_owned();
        let port = EthDev::probe(devargs, &dname)?;
        EthDev::setup(port, dname, pmds, mtu, None).map(Arc::new)
    }

    /// Two `net_ring` ports joined like a crossover cable: what one transmits the other
    /// receives. For tests and benchmarks that need a DPDK device with a far end of their own
    /// (the `net_ring` vdev alone is a loopback).
    pub fn crossover(
        name: &str,
        pmds: usize,
        mtu: Option<u16>,
    ) -> Result<(Arc<EthDev>, Arc<EthDev>), String> {
        if !matches!(EAL.get(), Some(Ok(_))) {
            return Err("the DPDK EAL is not initialised".to_owned());
        }
        let ring = |suffix: &str| -> Result<*mut sys::rte_ring, String> {
            let n = CString::new(format!("{name}_{suffix}")).map_err(|e| e.to_string())?;
            // SAFETY: a NUL-terminated name; a power-of-two size; default (MP/MC) flags.
            let r = unsafe { sys::rte_ring_create(n.as_ptr(), 4096, 0, 0) };
            if r.is_null() {
                Err(format!("ring {name}_{suffix}: {}", rte_error()))
            } else {
                Ok(r)
            }
        };
        let rings = Arc::new(Rings(vec![ring("ab")?, ring("ba")?]));
        let mut ends = Vec::new();
        for (end, rx, tx) in [("a", 1, 0), ("b", 0, 1)] {
            let pname = format!("{name}_{end}");
            let c = CString::new(pname.clone()).map_err(|e| e.to_string())?;
            let (rxr, txr) = (rings.0[rx], rings.0[tx]);
            // SAFETY: a NUL-terminated port name, one valid ring each way (kept alive by
            // `rings`, which both ports hold until they are closed).
            let port = unsafe { sys::rte_eth_from_rings(c.as_ptr(), &rxr, 1, &txr, 1, 0) };
            let port =
                u16::try_from(port).map_err(|_| format!("ring port {pname}: {}", rte_error()))?;
            ends.push(Arc::new(EthDev::setup(
                port,
                pname,
                pmds,
                mtu,
                Some(rings.clone()),
            )?));
        }
        let b = ends.pop().ok_or("no port")?;
        let a = ends.pop().ok_or("no port")?;
        Ok((a, b))
    }

    /// Probes a device and returns its (first) ethdev port.
    fn probe(devargs: &str, dname: &str) -> Result<u16, String> {
        let before = valid_ports();
        let c = CString::new(devargs).map_err(|_| "devargs contain a NUL".to_owned())?;
        // SAFETY: a NUL-terminated devargs string; the EAL is up.
        let rc = unsafe { sys::rte_dev_probe(c.as_ptr()) };
        let after = valid_ports();
        match after.iter().find(|p| !before.contains(p)) {
            Some(&p) => Ok(p),
            // Given in --dpdk-eal (--vdev/-a) already: find it by name.
            None => after
                .iter()
                .copied()
                .find(|&p| port_name(p) == dname)
                .ok_or_else(|| {
                    if rc < 0 {
                        format!("probing DPDK device `{devargs}` failed: {}", errno_text(rc))
                    } else {
                        format!("DPDK device `{devargs}` has no ethdev port")
                    }
                }),
        }
    }

    /// Configures and starts a probed port with its pool and queues.
    fn setup(
        port: u16,
        dname: String,
        pmds: usize,
        mtu: Option<u16>,
        rings: Option<Arc<Rings>>,
    ) -> Result<EthDev, String> {
        let mut info = sys::rte_eth_dev_info::default();
        // SAFETY: a valid port id and a struct of the right type to fill.
        let rc = unsafe { sys::rte_eth_dev_info_get(port, &mut info) };
        if rc != 0 {
            return Err(format!("{dname}: rte_eth_dev_info_get: {}", errno_text(rc)));
        }
        let driver = if info.driver_name.is_null() {
            "unknown".to_owned()
        } else {
            // SAFETY: the driver's static name, NUL-terminated.
            unsafe { CStr::from_ptr(info.driver_name) }
                .to_string_lossy()
                .into_owned()
        };
        let want_tx = u16::try_from(pmds.max(1)).unwrap_or(u16::MAX);
        let nb_tx = want_tx.min(info.max_tx_queues.max(1));
        let mut conf = sys::rte_eth_conf::default();
        if let Some(m) = mtu {
            if m < info.min_mtu || m > info.max_mtu {
                return Err(format!(
                    "{dname}: MTU {m} is outside what the device takes ({}..={})",
                    info.min_mtu, info.max_mtu
                ));
            }
            let frame = u32::from(m) + 18;
            if info.max_rx_pktlen != 0 && frame > info.max_rx_pktlen {
                return Err(format!(
                    "{dname}: MTU {m} needs frames of {frame} bytes; the device takes at most {} \
                     (DPDK 22.11's net_af_packet stays at 1500)",
                    info.max_rx_pktlen
                ));
            }
            conf.rxmode.mtu = u32::from(m);
        }
        // SAFETY: valid port, one rx queue, nb_tx <= max_tx_queues, a default configuration.
        let rc = unsafe { sys::rte_eth_dev_configure(port, 1, nb_tx, &conf) };
        if rc != 0 {
            return Err(format!("{dname}: configure: {}", errno_text(rc)));
        }
        let (mut nrx, mut ntx) = (RX_DESC, TX_DESC);
        // SAFETY: valid configured port; the counts are ours to adjust.
        unsafe { sys::rte_eth_dev_adjust_nb_rx_tx_desc(port, &mut nrx, &mut ntx) };
        let mut mtu16 = 1500u16;
        // SAFETY: valid port, a u16 to fill.
        unsafe { sys::rte_eth_dev_get_mtu(port, &mut mtu16) };
        let mtu = usize::from(mtu16);
        // SAFETY: a constant of the library.
        let headroom = usize::from(unsafe { sys::nfv_pktmbuf_headroom() });
        let room = headroom + (mtu + 18 + 63).next_multiple_of(64).max(2048);
        let room = u16::try_from(room).map_err(|_| format!("{dname}: MTU {mtu} too large"))?;
        // SAFETY: valid port.
        let socket = unsafe { sys::rte_eth_dev_socket_id(port) };
        // Unique per pool, not per port id: a closed port's id is reused by the next port probed,
        // possibly before the closed port's pool is freed (seen with tests opening ports on
        // several threads: "File exists").
        static POOLS: AtomicU64 = AtomicU64::new(0);
        let seq = POOLS.fetch_add(1, Ordering::Relaxed);
        let pname = CString::new(format!("nfv_pool_{seq}")).unwrap_or_default();
        // SAFETY: a NUL-terminated pool name used once in this process; sizes within the
        // library's limits.
        let pool = unsafe {
            sys::rte_pktmbuf_pool_create(pname.as_ptr(), POOL_MBUFS, POOL_CACHE, 0, room, socket)
        };
        if pool.is_null() {
            return Err(format!(
                "{dname}: creating its mbuf pool ({POOL_MBUFS} x {room} bytes): {}",
                rte_error()
            ));
        }
        // From here on, Drop closes the port and frees the pool.
        let mut dev = EthDev {
            port,
            _rings: rings,
            name: dname.clone(),
            driver,
            pool,
            mac: [0; 6],
            mtu,
            nb_tx,
            tx_shared: usize::from(nb_tx) < pmds,
            tx_busy: (0..nb_tx).map(|_| AtomicBool::new(false)).collect(),
            rx_claimed: AtomicBool::new(false),
        };
        let sock = u32::try_from(socket).unwrap_or(0);
        // SAFETY: valid configured port, queue 0, our pool; default queue configuration.
        let rc = unsafe { sys::rte_eth_rx_queue_setup(port, 0, nrx, sock, std::ptr::null(), pool) };
        if rc != 0 {
            return Err(format!("{dname}: rx queue: {}", errno_text(rc)));
        }
        for q in 0..nb_tx {
            // SAFETY: valid configured port, q < nb_tx; default queue configuration.
            let rc = unsafe { sys::rte_eth_tx_queue_setup(port, q, ntx, sock, std::ptr::null()) };
            if rc != 0 {
                return Err(format!("{dname}: tx queue {q}: {}", errno_text(rc)));
            }
        }
        // SAFETY: valid, configured port with its queues set up.
        let rc = unsafe { sys::rte_eth_dev_start(port) };
        if rc != 0 {
            return Err(format!("{dname}: start: {}", errno_text(rc)));
        }
        // A bridged uplink receives for the guests' MACs; an underlay needs only its own, but
        // an AF_PACKET or TAP device sees everything on its interface anyway.
        // SAFETY: valid started port.
        unsafe { sys::rte_eth_promiscuous_enable(port) };
        let mut addr = sys::rte_ether_addr::default();
        // SAFETY: valid port, a struct to fill.
        unsafe { sys::rte_eth_macaddr_get(port, &mut addr) };
        dev.mac = addr.addr_bytes;
        tracing::info!(
            "DPDK port {port} `{dname}` ({}) up: mtu {mtu}, {nb_tx} tx queue(s){}, {nrx}/{ntx} descriptors",
            dev.driver,
            if dev.tx_shared { " shared by the poll threads" } else { "" }
        );
        Ok(dev)
    }

    pub fn port_id(&self) -> u16 {
        self.port
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for EthDev {
    fn drop(&mut self) {
        if *CLEANED_UP.lock().unwrap_or_else(|p| p.into_inner()) {
            return;
        }
        // SAFETY: every EthIo holds an Arc on this device, so none is left: no thread uses its
        // queues; stopping and closing releases the mbufs in its rings, after which no mbuf of
        // the pool is in use and the pool can go.
        unsafe {
            sys::rte_eth_dev_stop(self.port);
            sys::rte_eth_dev_close(self.port);
            sys::rte_mempool_free(self.pool);
        }
        tracing::info!("DPDK port {} `{}` closed", self.port, self.name);
    }
}

impl EthDev {
    fn link(&self) -> LinkInfo {
        let mut l = sys::rte_eth_link::default();
        // SAFETY: valid port, a struct to fill; the no-wait variant does not block.
        let rc = unsafe { sys::rte_eth_link_get_nowait(self.port, &mut l) };
        if rc != 0 {
            return LinkInfo::default();
        }
        LinkInfo {
            up: u32::from(l.link_status()) == sys::RTE_ETH_LINK_UP,
            speed_mbps: if l.link_speed == u32::MAX {
                0
            } else {
                l.link_speed
            },
            full_duplex: u32::from(l.link_duplex()) == sys::RTE_ETH_LINK_FULL_DUPLEX,
        }
    }

    fn stats(&self) -> BTreeMap<String, u64> {
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: valid port, a struct to fill.
        let rc = unsafe { sys::rte_eth_stats_get(self.port, &mut s) };
        if rc != 0 {
            return BTreeMap::new();
        }
        // SAFETY: a query on our pool.
        let free = unsafe { sys::rte_mempool_avail_count(self.pool) };
        BTreeMap::from([
            ("ipackets".to_owned(), s.ipackets),
            ("opackets".to_owned(), s.opackets),
            ("ibytes".to_owned(), s.ibytes),
            ("obytes".to_owned(), s.obytes),
            ("imissed".to_owned(), s.imissed),
            ("ierrors".to_owned(), s.ierrors),
            ("oerrors".to_owned(), s.oerrors),
            ("rx_nombuf".to_owned(), s.rx_nombuf),
            ("mbufs_free".to_owned(), u64::from(free)),
        ])
    }
}

/// The [`NetDev`] of an open DPDK port: its I/O handles keep the port (and its pool) alive.
pub struct DpdkDev(pub Arc<EthDev>);

impl NetDev for DpdkDev {
    fn driver(&self) -> String {
        format!("dpdk {}", self.0.driver)
    }
    fn mac(&self) -> Mac {
        self.0.mac
    }
    fn mtu(&self) -> usize {
        self.0.mtu
    }
    fn link(&self) -> LinkInfo {
        self.0.link()
    }
    fn stats(&self) -> BTreeMap<String, u64> {
        self.0.stats()
    }
    fn io(&self, pmd: usize) -> Result<Box<dyn DevIo>, String> {
        register_thread();
        let dev = self.0.clone();
        let queue = u16::try_from(pmd % usize::from(dev.nb_tx.max(1))).unwrap_or(0);
        Ok(Box::new(EthIo {
            dev,
            queue,
            rx_owner: false,
            rx: [std::ptr::null_mut(); BURST],
            rx_data: [std::ptr::null(); BURST],
            rx_len: [0; BURST],
            nrx: 0,
            scratch: vec![0u8; BURST * MAX_DEV_FRAME].into_boxed_slice(),
            tx: [std::ptr::null_mut(); BURST],
            tx_data: [std::ptr::null_mut(); BURST],
            tx_room: [0; BURST],
            tx_len: [0; BURST],
            ntx: 0,
            nalloc: 0,
            early: TxOutcome::default(),
        }))
    }
}

/// A poll thread's I/O on a DPDK port.
struct EthIo {
    dev: Arc<EthDev>,
    /// Transmit queue of this thread.
    queue: u16,
    /// This handle claimed the receive queue.
    rx_owner: bool,
    /// The current receive burst: mbufs, their data (in the mbuf, or in `scratch` for a
    /// chained one), lengths.
    rx: [*mut sys::rte_mbuf; BURST],
    rx_data: [*const u8; BURST],
    rx_len: [u32; BURST],
    nrx: usize,
    /// Room to linearise chained mbufs: one frame of `MAX_DEV_FRAME` per burst slot.
    scratch: Box<[u8]>,
    /// Transmit: mbufs allocated in advance; `[0, ntx)` hold frames to send, `[ntx, nalloc)`
    /// are still empty.
    tx: [*mut sys::rte_mbuf; BURST],
    tx_data: [*mut u8; BURST],
    tx_room: [u16; BURST],
    tx_len: [u16; BURST],
    ntx: usize,
    nalloc: usize,
    /// Outcome of bursts sent before the flush (a full burst waiting).
    early: TxOutcome,
}

// SAFETY: the raw pointers are mbufs (and their data) this handle owns exclusively until it
// gives them back; the handle moves to its poll thread once and is used there only.
unsafe impl Send for EthIo {}

impl EthIo {
    /// Sends `[0, ntx)` and keeps the unused preallocated mbufs for the next burst.
    fn send(&mut self) {
        let n = self.ntx;
        if n == 0 {
            return;
        }
        let dev = &*self.dev;
        let lock = dev.tx_shared.then(|| &dev.tx_busy[usize::from(self.queue)]);
        let mut locked = lock.is_none();
        if let Some(l) = lock {
            for _ in 0..BUSY_SPINS {
                if l.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    locked = true;
                    break;
                }
                std::hint::spin_loop();
            }
        }
        let mut sent = 0usize;
        if locked {
            // Two tries: a device that took part of a burst usually takes the rest a moment
            // later; beyond that the rest is dropped rather than held.
            for _ in 0..2 {
                let left = u16::try_from(n - sent).unwrap_or(0);
                // SAFETY: tx[sent..n] are mbufs we own with tx_len[i] <= their tailroom bytes
                // written at their data pointers; our queue exists (queue < nb_tx) and is ours
                // alone, or held through `tx_busy`.
                let k = unsafe {
                    sys::nfv_tx_burst(
                        dev.port,
                        self.queue,
                        self.tx.as_mut_ptr().add(sent),
                        self.tx_len.as_ptr().add(sent),
                        left,
                    )
                };
                sent += usize::from(k);
                if sent == n || k == 0 {
                    break;
                }
            }
            if let Some(l) = lock {
                l.store(false, Ordering::Release);
            }
            self.early.sent += sent as u64;
            self.early.sent_bytes += self.tx_len[..sent]
                .iter()
                .map(|&l| u64::from(l))
                .sum::<u64>();
            self.early.full += (n - sent) as u64;
        } else {
            self.early.busy += n as u64;
        }
        if sent < n {
            // SAFETY: tx[sent..n] are ours (the device did not take them); freed once.
            unsafe {
                sys::rte_pktmbuf_free_bulk(
                    self.tx.as_mut_ptr().add(sent),
                    u32::try_from(n - sent).unwrap_or(0),
                )
            };
        }
        // Keep the unused preallocated mbufs at the front.
        let spare = self.nalloc - n;
        self.tx.copy_within(n..self.nalloc, 0);
        self.tx_data.copy_within(n..self.nalloc, 0);
        self.tx_room.copy_within(n..self.nalloc, 0);
        self.ntx = 0;
        self.nalloc = spare;
    }

    /// Allocates mbufs for the rest of the burst (all or, failing that, one).
    fn refill(&mut self) -> bool {
        let pool = self.dev.pool;
        for want in [BURST - self.nalloc, 1] {
            let at = self.nalloc;
            // SAFETY: room for `want` entries at `at` in each array (at + want <= BURST); the
            // pool is alive (we hold the device).
            let rc = unsafe {
                sys::nfv_alloc_bulk(
                    pool,
                    self.tx.as_mut_ptr().add(at),
                    u16::try_from(want).unwrap_or(0),
                    self.tx_data.as_mut_ptr().add(at),
                    self.tx_room.as_mut_ptr().add(at),
                )
            };
            if rc == 0 {
                self.nalloc += want;
                return true;
            }
        }
        false
    }
}

impl DevIo for EthIo {
    fn rx(&mut self) -> (usize, u64) {
        self.rx_release();
        if !self.rx_owner {
            if self
                .dev
                .rx_claimed
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                return (0, 0);
            }
            self.rx_owner = true;
        }
        let mut data = [std::ptr::null_mut::<u8>(); BURST];
        // SAFETY: the receive queue is ours alone (claimed); arrays of BURST entries.
        let n = usize::from(unsafe {
            sys::nfv_rx_burst(
                self.dev.port,
                0,
                self.rx.as_mut_ptr(),
                BURST_U16,
                data.as_mut_ptr(),
                self.rx_len.as_mut_ptr(),
            )
        });
        let mut kept = 0;
        let mut dropped = 0u64;
        for (i, &d) in data.iter().enumerate().take(n) {
            let len = self.rx_len[i] as usize;
            let p = if !d.is_null() {
                d.cast_const()
            } else if len <= MAX_DEV_FRAME {
                // A chained mbuf: linearise into this slot's scratch.
                let buf = self.scratch[kept * MAX_DEV_FRAME..].as_mut_ptr();
                // SAFETY: rx[i] is an mbuf we own of pkt_len `len`; buf has MAX_DEV_FRAME >= len
                // bytes of our own memory.
                unsafe {
                    sys::nfv_pktmbuf_read(self.rx[i], 0, self.rx_len[i], buf.cast()).cast::<u8>()
                }
            } else {
                std::ptr::null()
            };
            if p.is_null() {
                dropped += 1;
                let mut m = self.rx[i];
                // SAFETY: an mbuf we own, freed once and forgotten.
                unsafe { sys::rte_pktmbuf_free_bulk(&mut m, 1) };
                continue;
            }
            self.rx[kept] = self.rx[i];
            self.rx_len[kept] = self.rx_len[i];
            self.rx_data[kept] = p;
            kept += 1;
        }
        self.nrx = kept;
        (kept, dropped)
    }

    fn frame(&self, i: usize) -> &[u8] {
        if i >= self.nrx {
            return &[];
        }
        // SAFETY: rx_data[i] points at rx_len[i] readable bytes: the data of an mbuf we own
        // until `rx_release` (which needs `&mut self`, so not while this borrow lives), or our
        // scratch buffer.
        unsafe { std::slice::from_raw_parts(self.rx_data[i], self.rx_len[i] as usize) }
    }

    fn rx_release(&mut self) {
        if self.nrx > 0 {
            // SAFETY: rx[..nrx] are mbufs we own, freed once.
            unsafe {
                sys::rte_pktmbuf_free_bulk(
                    self.rx.as_mut_ptr(),
                    u32::try_from(self.nrx).unwrap_or(0),
                )
            };
            self.nrx = 0;
        }
    }

    fn tx_buf(&mut self, len: usize) -> Result<&mut [u8], TxBufError> {
        if self.ntx == BURST {
            self.send();
        }
        if self.ntx == self.nalloc && !self.refill() {
            return Err(TxBufError::NoBuffers);
        }
        let i = self.ntx;
        if len > usize::from(self.tx_room[i]) {
            return Err(TxBufError::TooBig);
        }
        // len <= tailroom, a u16.
        self.tx_len[i] = u16::try_from(len).unwrap_or(0);
        self.ntx += 1;
        // SAFETY: tx_data[i] is the data area of an mbuf we own with at least `len` bytes of
        // tailroom; the slice lives no longer than the `&mut self` borrow, and the mbuf stays
        // ours until `send`, which needs `&mut self` too.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.tx_data[i], len) })
    }

    fn tx_flush(&mut self) -> TxOutcome {
        self.send();
        std::mem::take(&mut self.early)
    }
}

impl Drop for EthIo {
    fn drop(&mut self) {
        self.rx_release();
        if self.rx_owner {
            self.dev.rx_claimed.store(false, Ordering::Release);
        }
        if self.nalloc > 0 {
            // SAFETY: tx[..nalloc] are mbufs we own (written or not), freed once.
            unsafe {
                sys::rte_pktmbuf_free_bulk(
                    self.tx.as_mut_ptr(),
                    u32::try_from(self.nalloc).unwrap_or(0),
                )
            };
            self.nalloc = 0;
            self.ntx = 0;
        }
    }
}
