//! The guest image the QEMU tests boot: an uncompressed Debian kernel (`vmlinux`, PVH entry, booted
//! by qboot) and a busybox initramfs whose `/init` is `tests/guest/init.sh`.
//!
//! Built from Debian packages on first use and cached outside the source tree
//! (`<target>/nfv-guest-image/`), keyed by a hash of everything that goes into the initramfs, so
//! editing `init.sh` rebuilds it. Two test processes may ask at once: builders take an exclusive
//! lock, build into a temporary directory and rename it into place, so a reader sees either no
//! image or a complete one.
//!
//! Why each tool:
//! - `apt-cache` / `apt-get download`: the kernel comes from Debian's registry as a package; the
//!   harness never installs it on the host.
//! - `dpkg-deb --fsys-tarfile | tar -x`: extracts only the kernel and the eight virtio modules
//!   instead of writing the whole 400 MB module tree that `dpkg -x` would.
//! - python3's `lzma` (liblzma) for the xz payload of `vmlinuz`: the kernel's xz stream uses the x86
//!   BCJ filter, which the pure-Rust xz decoders do not implement, and binding liblzma from Rust
//!   would add a C build to the workspace for one file. `xz --single-stream` is the fallback.
//! - the cpio (`newc`) archive is written here in Rust (no cpio tool, deterministic output, and the
//!   `/dev/console` node needs no root); `gzip` (Essential in Debian) compresses it.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::peers;

/// The guest's `/init`, embedded so the image always matches the source it was built from.
pub const INIT_SCRIPT: &str = include_str!("../guest/init.sh");

/// Kernel modules the guest needs for virtio-net, in load order (dependencies first), as paths
/// under `/lib/modules/<version>/kernel/` without the `.ko` suffix.
pub const MODULES: [&str; 8] = [
    "drivers/virtio/virtio_ring",
    "drivers/virtio/virtio",
    "drivers/virtio/virtio_pci_modern_dev",
    "drivers/virtio/virtio_pci_legacy_dev",
    "drivers/virtio/virtio_pci",
    "net/core/failover",
    "drivers/net/net_failover",
    "drivers/net/virtio_net",
];

/// Bump when the way the image is built changes (the hash covers the inputs, not this code).
const FORMAT_VERSION: &str = "nfv-guest-image v1";

/// Where the busybox binary comes from (package `busybox-static`).
const BUSYBOX: &str = "/bin/busybox";

/// The firmware that boots `vmlinux` through its PVH entry.
pub const QBOOT: &str = "/usr/share/qemu/qboot.rom";

/// A built guest image.
#[derive(Debug, Clone)]
pub struct GuestImage {
    /// Directory holding this image's files.
    pub dir: PathBuf,
    /// Uncompressed kernel ELF (boot with `-bios` [`QBOOT`] `-kernel vmlinux`).
    pub vmlinux: PathBuf,
    /// gzip-compressed `newc` initramfs.
    pub initrd: PathBuf,
    /// Kernel release, for example `6.1.0-56-amd64`.
    pub kernel_release: String,
}

impl GuestImage {
    /// Returns the cached image, building it first when it is missing or stale.
    ///
    /// The cache lives in `$NFV_GUEST_IMAGE_DIR` when set, else `<target>/nfv-guest-image/`.
    /// The kernel is the package `linux-image-amd64` depends on, unless
    /// `$NFV_GUEST_KERNEL_PACKAGE` names one. Errors name the missing package or the failing step.
    pub fn ensure() -> Result<GuestImage, String> {
        Self::ensure_in(&Self::cache_dir())
    }

    /// The default cache directory (see [`GuestImage::ensure`]).
    pub fn cache_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("NFV_GUEST_IMAGE_DIR") {
            return PathBuf::from(dir);
        }
        let profile_dir = peers::target_dir();
        // `target/debug` -> `target`, so debug and release builds share one image.
        profile_dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or(profile_dir)
            .join("nfv-guest-image")
    }

    /// Like [`GuestImage::ensure`], with an explicit cache directory.
    pub fn ensure_in(cache: &Path) -> Result<GuestImage, String> {
        fs::create_dir_all(cache)
            .map_err(|e| format!("create guest image cache {}: {e}", cache.display()))?;
        let key = image_key();
        let image_dir = cache.join(format!("image-{key:016x}"));
        // A complete image is renamed into place as a whole, so its existence is enough.
        if let Some(image) = Self::load(&image_dir) {
            return Ok(image);
        }

        let lock_path = cache.join("build.lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("open {}: {e}", lock_path.display()))?;
        lock.lock()
            .map_err(|e| format!("lock {}: {e}", lock_path.display()))?;
        // Another process may have built it while we waited for the lock.
        if let Some(image) = Self::load(&image_dir) {
            return Ok(image);
        }

        remove_stale_builds(cache);
        let started = std::time::Instant::now();
        eprintln!(
            "nfv-tests: building the guest image in {} (once; kernel from Debian's registry)",
            image_dir.display()
        );
        let tmp = cache.join(format!("tmp-{}-{}", std::process::id(), nanos()));
        let result = build(cache, &tmp).and_then(|release| {
            fs::rename(&tmp, &image_dir)
                .map_err(|e| format!("rename {} -> {}: {e}", tmp.display(), image_dir.display()))?;
            Ok(release)
        });
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result?;
        prune_old_images(cache, &image_dir);
        eprintln!(
            "nfv-tests: guest image built in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Self::load(&image_dir).ok_or_else(|| {
            format!(
                "guest image {} incomplete right after building it",
                image_dir.display()
            )
        })
        // `lock` is released here, when it drops.
    }

    fn load(dir: &Path) -> Option<GuestImage> {
        let stamp = fs::read_to_string(dir.join("stamp")).ok()?;
        let kernel_release = stamp
            .lines()
            .find_map(|l| l.strip_prefix("kernel_release="))?
            .to_string();
        let image = GuestImage {
            dir: dir.to_path_buf(),
            vmlinux: dir.join("vmlinux"),
            initrd: dir.join("initrd.cpio.gz"),
            kernel_release,
        };
        (image.vmlinux.is_file() && image.initrd.is_file()).then_some(image)
    }
}

/// Hash of everything the image depends on, so a change to any of them gives a new image.
fn image_key() -> u64 {
    let mut h = Fnv64::new();
    h.write(FORMAT_VERSION.as_bytes());
    h.write(INIT_SCRIPT.as_bytes());
    for m in MODULES {
        h.write(m.as_bytes());
    }
    h.finish()
}

/// FNV-1a: stable across Rust releases and machines, unlike `DefaultHasher`; only change
/// detection, no adversary.
struct Fnv64(u64);

impl Fnv64 {
    fn new() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // Separator, so ("ab","c") and ("a","bc") differ.
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

fn nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Builds the image into `out` (which must not exist); returns the kernel release.
fn build(cache: &Path, out: &Path) -> Result<String, String> {
    fs::create_dir_all(out).map_err(|e| format!("create {}: {e}", out.display()))?;
    let busybox = read_busybox()?;
    let package = kernel_package()?;
    let release = package
        .strip_prefix("linux-image-")
        .ok_or_else(|| format!("unexpected kernel package name {package}"))?
        .to_string();
    let deb = download_deb(&cache.join("debs"), &package)?;

    let extract = out.join("kpkg");
    let boot = format!("./boot/vmlinuz-{release}");
    let modules: Vec<String> = MODULES
        .iter()
        .map(|m| format!("./lib/modules/{release}/kernel/{m}.ko"))
        .collect();
    let mut members = vec![boot.clone()];
    members.extend(modules.iter().cloned());
    extract_members(&deb, &extract, &members)?;

    let vmlinuz = fs::read(extract.join(&boot))
        .map_err(|e| format!("read {}: {e}", extract.join(&boot).display()))?;
    let vmlinux = decompress_vmlinuz(&vmlinuz, out)?;
    fs::write(out.join("vmlinux"), &vmlinux)
        .map_err(|e| format!("write {}: {e}", out.join("vmlinux").display()))?;

    let mut cpio = Cpio::default();
    for dir in [
        "bin",
        "sbin",
        "dev",
        "etc",
        "lib",
        "lib/modules",
        "proc",
        "root",
        "sys",
        "tmp",
        "usr",
        "usr/bin",
        "usr/sbin",
    ] {
        cpio.dir(dir);
    }
    // The kernel opens /dev/console for init before devtmpfs is mounted.
    cpio.char_device("dev/console", 0o600, 5, 1);
    cpio.file("init", 0o755, INIT_SCRIPT.as_bytes());
    cpio.file("bin/busybox", 0o755, &busybox);
    for (m, member) in MODULES.iter().zip(&modules) {
        let src = extract.join(member);
        let data = fs::read(&src).map_err(|e| format!("read {}: {e}", src.display()))?;
        let name = m.rsplit('/').next().unwrap_or(m);
        cpio.file(&format!("lib/modules/{name}.ko"), 0o644, &data);
    }
    let cpio_path = out.join("initrd.cpio");
    fs::write(&cpio_path, cpio.finish())
        .map_err(|e| format!("write {}: {e}", cpio_path.display()))?;
    run(
        Command::new("gzip").arg("-n").arg("-6").arg(&cpio_path),
        "gzip (Debian package gzip)",
    )?;
    fs::remove_dir_all(&extract).map_err(|e| format!("remove {}: {e}", extract.display()))?;

    let mut stamp = File::create(out.join("stamp")).map_err(|e| format!("write stamp: {e}"))?;
    writeln!(
        stamp,
        "format={FORMAT_VERSION}\nkernel_package={package}\nkernel_release={release}\n\
         key={:016x}\ndeb={}",
        image_key(),
        deb.display()
    )
    .map_err(|e| format!("write stamp: {e}"))?;
    Ok(release)
}

/// Removes what builds killed midway left behind; only the lock holder builds, so under the lock
/// every scratch folder is stale.
fn remove_stale_builds(cache: &Path) {
    for (dir, prefix) in [
        (cache.to_path_buf(), "tmp-"),
        (cache.join("debs"), "partial-"),
    ] {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(prefix) {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// Removes images built from older inputs (they are never used again).
fn prune_old_images(cache: &Path, keep: &Path) {
    let Ok(entries) = fs::read_dir(cache) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path != keep && name.starts_with("image-") {
            let _ = fs::remove_dir_all(&path);
        }
    }
}

/// Reads busybox and checks it is statically linked (the guest has no libc).
fn read_busybox() -> Result<Vec<u8>, String> {
    let data = fs::read(BUSYBOX).map_err(|e| {
        format!("{BUSYBOX} missing ({e}): install the Debian package busybox-static")
    })?;
    match elf_has_interpreter(&data) {
        Some(false) => Ok(data),
        Some(true) => Err(format!(
            "{BUSYBOX} is dynamically linked (package busybox?); install busybox-static"
        )),
        None => Err(format!(
            "{BUSYBOX} is not an x86-64 ELF binary; install busybox-static"
        )),
    }
}

/// Whether a 64-bit little-endian ELF has a `PT_INTERP` segment (is dynamically linked).
fn elf_has_interpreter(elf: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        return None;
    }
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let phoff = usize::try_from(u64::from_le_bytes(elf.get(0x20..0x28)?.try_into().ok()?)).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    for i in 0..phnum {
        let off = phoff.checked_add(i.checked_mul(phentsize)?)?;
        let p_type = u32::from_le_bytes(elf.get(off..off + 4)?.try_into().ok()?);
        if p_type == PT_INTERP {
            return Some(true);
        }
    }
    Some(false)
}

/// The versioned kernel package `linux-image-amd64` points at, e.g. `linux-image-6.1.0-56-amd64`.
fn kernel_package() -> Result<String, String> {
    if let Ok(pkg) = std::env::var("NFV_GUEST_KERNEL_PACKAGE") {
        return Ok(pkg);
    }
    let out = output(
        Command::new("apt-cache")
            .args(["depends", "linux-image-amd64"])
            .env("LC_ALL", "C"),
        "apt-cache (Debian package apt)",
    )?;
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-") && p.ends_with("-amd64"))
        .map(str::to_string)
        .ok_or_else(|| {
            format!(
                "`apt-cache depends linux-image-amd64` names no kernel package (package lists \
                 empty? run `apt-get update` as root); it printed:\n{out}"
            )
        })
}

/// Downloads `package`'s .deb into `dir` unless it is there already; returns its path.
fn download_deb(dir: &Path, package: &str) -> Result<PathBuf, String> {
    fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let find = || -> Option<PathBuf> {
        fs::read_dir(dir)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .map(|n| {
                        let n = n.to_string_lossy();
                        n.starts_with(&format!("{package}_")) && n.ends_with(".deb")
                    })
                    .unwrap_or(false)
            })
    };
    if let Some(deb) = find() {
        return Ok(deb);
    }
    // Download into a scratch folder so an interrupted download never looks complete.
    let partial = dir.join(format!("partial-{}-{}", std::process::id(), nanos()));
    fs::create_dir_all(&partial).map_err(|e| format!("create {}: {e}", partial.display()))?;
    // Let apt's `_apt` sandbox user write there, which avoids its "unsandboxed" warning.
    let _ = fs::set_permissions(&partial, fs::Permissions::from_mode(0o777));
    let result = run(
        Command::new("apt-get")
            .args(["download", "-q", package])
            .current_dir(&partial),
        "apt-get (Debian package apt)",
    )
    .map_err(|e| format!("downloading the guest kernel {package} from Debian's registry: {e}"));
    let moved = result.and_then(|()| {
        let deb = fs::read_dir(&partial)
            .map_err(|e| format!("read {}: {e}", partial.display()))?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().map(|x| x == "deb").unwrap_or(false))
            .ok_or_else(|| format!("apt-get download {package} produced no .deb"))?;
        let name = deb
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        let dest = dir.join(name);
        fs::rename(&deb, &dest).map_err(|e| format!("rename {}: {e}", deb.display()))?;
        Ok(dest)
    });
    let _ = fs::remove_dir_all(&partial);
    moved
}

/// Extracts `members` (paths as stored in the package, `./boot/...`) of a .deb into `dest`.
fn extract_members(deb: &Path, dest: &Path, members: &[String]) -> Result<(), String> {
    fs::create_dir_all(dest).map_err(|e| format!("create {}: {e}", dest.display()))?;
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("run dpkg-deb (Debian package dpkg): {e}"))?;
    let Some(tar_input) = dpkg.stdout.take() else {
        let _ = dpkg.kill();
        let _ = dpkg.wait();
        return Err("dpkg-deb: no stdout pipe".to_string());
    };
    let tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(dest)
        .args(members)
        .stdin(Stdio::from(tar_input))
        .output();
    let dpkg_out = dpkg.wait_with_output();
    let tar = tar.map_err(|e| format!("run tar (Debian package tar): {e}"))?;
    let dpkg_out = dpkg_out.map_err(|e| format!("wait for dpkg-deb: {e}"))?;
    if !tar.status.success() {
        return Err(format!(
            "extracting the kernel and virtio modules from {} failed ({}): {}{}",
            deb.display(),
            tar.status,
            String::from_utf8_lossy(&tar.stderr),
            String::from_utf8_lossy(&dpkg_out.stderr)
        ));
    }
    // tar may stop reading once it has every member, which kills dpkg-deb with SIGPIPE; only
    // the members matter, and tar checked they were all there.
    Ok(())
}

/// Finds the xz stream in a bzImage and decompresses it into the ELF `vmlinux`.
fn decompress_vmlinuz(vmlinuz: &[u8], scratch: &Path) -> Result<Vec<u8>, String> {
    const XZ_MAGIC: &[u8] = b"\xfd7zXZ\x00";
    let start = vmlinuz
        .windows(XZ_MAGIC.len())
        .position(|w| w == XZ_MAGIC)
        .ok_or("vmlinuz holds no xz stream (kernel not xz-compressed?)")?;
    let payload = scratch.join("vmlinux.xz");
    fs::write(&payload, &vmlinuz[start..])
        .map_err(|e| format!("write {}: {e}", payload.display()))?;
    let open = || File::open(&payload).map_err(|e| format!("open {}: {e}", payload.display()));

    // The stream is followed by the rest of the bzImage: both decoders stop at the stream's end.
    let py = "import lzma,sys\n\
              d=lzma.LZMADecompressor(format=lzma.FORMAT_XZ)\n\
              sys.stdout.buffer.write(d.decompress(sys.stdin.buffer.read()))\n";
    let mut errors = Vec::new();
    let attempts: [(&str, Vec<&str>); 2] = [
        ("python3", vec!["-c", py]),
        ("xz", vec!["--decompress", "--stdout", "--single-stream"]),
    ];
    for (tool, args) in attempts {
        let result = Command::new(tool)
            .args(&args)
            .stdin(Stdio::from(open()?))
            .stderr(Stdio::piped())
            .output();
        match result {
            Ok(out) if out.status.success() && out.stdout.starts_with(b"\x7fELF") => {
                let _ = fs::remove_file(&payload);
                return Ok(out.stdout);
            }
            Ok(out) => errors.push(format!(
                "{tool}: {} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => errors.push(format!("{tool}: {e}")),
        }
    }
    Err(format!(
        "could not decompress vmlinuz (install python3 or xz-utils): {}",
        errors.join("; ")
    ))
}

/// Runs a command to completion; `what` names the tool and its package for errors.
fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    output(cmd, what).map(|_| ())
}

fn output(cmd: &mut Command, what: &str) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if !out.status.success() {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "{what} failed ({}):\n{}",
            out.status,
            [stdout.trim(), stderr.trim()]
                .iter()
                .filter(|s| !s.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A `newc` cpio archive, as the kernel's initramfs unpacker reads it.
#[derive(Default)]
struct Cpio {
    buf: Vec<u8>,
    ino: u32,
}

impl Cpio {
    const S_IFDIR: u32 = 0o040000;
    const S_IFREG: u32 = 0o100000;
    const S_IFCHR: u32 = 0o020000;

    fn dir(&mut self, name: &str) {
        self.entry(name, Self::S_IFDIR | 0o755, 2, (0, 0), &[]);
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, Self::S_IFREG | perm, 1, (0, 0), data);
    }

    fn char_device(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, Self::S_IFCHR | perm, 1, (major, minor), &[]);
    }

    fn entry(&mut self, name: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        // newc stores sizes in 8 hex digits; our files (kernel modules, busybox) are far below
        // 4 GiB, and a bigger one is a bug in the caller.
        let size = u32::try_from(data.len()).expect("cpio member larger than 4 GiB");
        let namesize = u32::try_from(name.len() + 1).expect("cpio member name too long");
        let fields = [
            self.ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, namesize, 0,
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad4();
        self.buf.extend_from_slice(data);
        self.pad4();
    }

    fn pad4(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.ino = 0;
        self.entry("TRAILER!!!", 0, 1, (0, 0), &[]);
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_newc_header_layout() {
        let mut c = Cpio::default();
        c.file("init", 0o755, b"#!x\n");
        let out = c.finish();
        assert_eq!(&out[..6], b"070701");
        // Header is 110 bytes, then "init\0" padded to 4 -> 116, then 4 bytes of data.
        assert_eq!(&out[110..115], b"init\0");
        assert_eq!(&out[116..120], b"#!x\n");
        assert_eq!(&out[120..126], b"070701");
        assert!(out.windows(10).any(|w| w == b"TRAILER!!!"));
        assert_eq!(out.len() % 4, 0);
    }

    #[test]
    fn fnv_separates_fields() {
        let mut a = Fnv64::new();
        a.write(b"ab");
        a.write(b"c");
        let mut b = Fnv64::new();
        b.write(b"a");
        b.write(b"bc");
        assert_ne!(a.finish(), b.finish());
    }

    #[test]
    fn elf_interp_detection_rejects_garbage() {
        assert_eq!(elf_has_interpreter(b"not an elf"), None);
    }

    #[test]
    fn elf_interp_detection_sees_a_dynamic_binary() {
        // This test binary links glibc dynamically, so it has a PT_INTERP.
        let exe = fs::read("/proc/self/exe").expect("read /proc/self/exe");
        assert_eq!(elf_has_interpreter(&exe), Some(true));
    }
}
