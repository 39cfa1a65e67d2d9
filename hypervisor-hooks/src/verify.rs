//! Trampoline verification: before a guest process is granted a view of another guest's memory,
//! check that the code it says switches views is code we approved (its hash is in the manifest)
//! and that nothing else in its executable mappings can switch them (no WRPKRU, and no XRSTOR in
//! its own binary, outside the trampoline).
//!
//! The guest's memory is read with `process_vm_readv` using the pid the kernel reports for the
//! hooks connection (SO_PEERCRED), never a pid the guest claims.
//!
//! Byte patterns are found two ways. A raw scan finds every occurrence; a linear-sweep decode
//! of the mapping tells which of them are instructions (refused outside the trampoline) and which
//! lie across the boundary of two other instructions (e.g. `rol $0xf,%r10d; add %ebp,%edi`
//! encodes `... 0f 01 ef ...`). Those unintended occurrences are counted and reported, not
//! refused: ordinary compiled code is full of them (SHA-256 rotations produce one), and removing
//! them takes binary rewriting as in ERIM — a guest that hijacks its own control flow could jump
//! into one. That residual risk is stated, not hidden.

use std::collections::BTreeSet;
use std::io::IoSliceMut;
use std::path::Path;

use nix::sys::uio::{process_vm_readv, RemoteIoVec};
use nix::unistd::Pid;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::proto::Trampoline;

/// The largest trampoline accepted (a few pages of code at most).
pub const MAX_TRAMPOLINE: u64 = 64 * 1024;

/// SHA-256 digests of approved trampolines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    digests: BTreeSet<[u8; 32]>,
    /// Why the process's other executable mappings are not scanned, when they are not (see
    /// [`Manifest::without_mapping_scan`]).
    unscanned: Option<String>,
}

impl Manifest {
    /// Parses a manifest: one hex SHA-256 per line, optionally followed by a name; `#` starts a
    /// comment.
    pub fn parse(text: &str) -> Result<Manifest> {
        let mut digests = BTreeSet::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            let Some(hex) = line.split_whitespace().next() else {
                continue;
            };
            let hex = hex.strip_prefix("sha256:").unwrap_or(hex);
            let d = parse_digest(hex).ok_or_else(|| {
                Error::Verify(format!(
                    "manifest line {}: `{hex}` is not a 64-digit hex SHA-256",
                    n + 1
                ))
            })?;
            digests.insert(d);
        }
        Ok(Manifest {
            digests,
            unscanned: None,
        })
    }

    /// Verifies trampolines by digest only, without scanning the rest of the process's code for
    /// PKRU-changing instructions: for a process run under a dynamic binary translator
    /// (valgrind counting the data path's instructions), whose code cache is anonymous
    /// executable memory that no scan can vouch for and that decodes differently from one
    /// build to the next. Reachable only through this API — no flag or configuration file of
    /// the switch sets it — and logged at every channel it lets through, with `why`.
    pub fn without_mapping_scan(mut self, why: &str) -> Manifest {
        self.unscanned = Some(why.to_owned());
        self
    }

    pub fn load(path: &Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Verify(format!("cannot read manifest {}: {e}", path.display())))?;
        Manifest::parse(&text)
    }

    pub fn allows(&self, digest: &[u8; 32]) -> bool {
        self.digests.contains(digest)
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut d = [0u8; 32];
    for (i, b) in d.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(d)
}

/// Lowercase hex of a digest.
pub fn hex(d: &[u8; 32]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of bytes.
pub fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// A byte pattern that can change memory protection keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// `0F 01 EF`.
    Wrpkru,
    /// `0F AE /5` with a memory operand (XRSTOR, XRSTOR64), or `0F C7 /3` (XRSTORS): can load
    /// PKRU from memory.
    Xrstor,
}

/// Every offset in `code` where a pattern starts.
pub fn scan(code: &[u8]) -> Vec<(usize, Pattern)> {
    let mut found = Vec::new();
    for i in 0..code.len().saturating_sub(2) {
        if code[i] != 0x0f {
            continue;
        }
        let (op, modrm) = (code[i + 1], code[i + 2]);
        let reg = (modrm >> 3) & 7;
        let memory_operand = modrm >> 6 != 3;
        if op == 0x01 && modrm == 0xef {
            found.push((i, Pattern::Wrpkru));
        } else if (op == 0xae && reg == 5 && memory_operand)
            || (op == 0xc7 && reg == 3 && memory_operand)
        {
            found.push((i, Pattern::Xrstor));
        }
    }
    found
}

/// One executable mapping of the guest process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub path: String,
}

/// Executable mappings listed in `/proc/PID/maps` text.
pub fn executable_mappings(maps: &str) -> Vec<Mapping> {
    maps.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let range = f.next()?;
            let perms = f.next()?;
            if !perms.contains('x') {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            let path = f.nth(3).unwrap_or("").to_owned();
            Some(Mapping {
                start: u64::from_str_radix(a, 16).ok()?,
                end: u64::from_str_radix(b, 16).ok()?,
                path,
            })
        })
        .collect()
}

/// What verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub digest: [u8; 32],
    /// Mappings scanned and bytes read.
    pub mappings: usize,
    pub bytes: u64,
    /// PKRU-changing instructions in shared system libraries (allowed, counted): glibc has
    /// `pkey_set` (WRPKRU) and the dynamic loader saves state with XRSTOR.
    pub library_sites: usize,
    /// Pattern bytes that are not instructions (they straddle two others): allowed, counted.
    pub unintended: usize,
}

/// Offsets in `code` (loaded at `ip`) where a linear-sweep decode finds an instruction that can
/// change PKRU: WRPKRU, XRSTOR, XRSTOR64, XRSTORS, XRSTORS64.
pub fn pkru_instructions(code: &[u8], ip: u64) -> Vec<(usize, Pattern)> {
    use iced_x86::{Decoder, DecoderOptions, Mnemonic};
    let mut d = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut out = Vec::new();
    while d.can_decode() {
        let pos = d.position();
        let i = d.decode();
        let p = match i.mnemonic() {
            Mnemonic::Wrpkru => Pattern::Wrpkru,
            Mnemonic::Xrstor | Mnemonic::Xrstor64 | Mnemonic::Xrstors | Mnemonic::Xrstors64 => {
                Pattern::Xrstor
            }
            _ => continue,
        };
        out.push((pos, p));
    }
    out
}

fn read_remote(pid: Pid, addr: u64, len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let n = {
            let mut local = [IoSliceMut::new(&mut buf[done..])];
            let remote = [RemoteIoVec {
                base: usize::try_from(addr).unwrap_or(usize::MAX) + done,
                len: len - done,
            }];
            process_vm_readv(pid, &mut local, &remote)
                .map_err(|e| Error::Verify(format!("reading guest memory at {addr:#x}: {e}")))?
        };
        if n == 0 {
            return Err(Error::Verify(format!(
                "guest memory at {addr:#x} ended early"
            )));
        }
        done += n;
    }
    Ok(buf)
}

/// SHA-256 of the trampoline of process `pid` (a guest prints its own for the manifest).
pub fn trampoline_digest(pid: i32, tramp: Trampoline) -> Result<[u8; 32]> {
    if tramp.len == 0 || tramp.len > MAX_TRAMPOLINE {
        return Err(Error::Verify(format!(
            "trampoline length {} outside 1..={MAX_TRAMPOLINE}",
            tramp.len
        )));
    }
    let code = read_remote(
        Pid::from_raw(pid),
        tramp.start,
        usize::try_from(tramp.len).unwrap_or(0),
    )?;
    Ok(digest(&code))
}

/// Verifies the trampoline of process `pid` (the kernel-reported peer of the hooks connection).
pub fn verify(pid: i32, tramp: Trampoline, manifest: &Manifest) -> Result<Report> {
    if tramp.len == 0 || tramp.len > MAX_TRAMPOLINE {
        return Err(Error::Verify(format!(
            "trampoline length {} outside 1..={MAX_TRAMPOLINE}",
            tramp.len
        )));
    }
    let tramp_end = tramp
        .start
        .checked_add(tramp.len)
        .ok_or_else(|| Error::Verify("trampoline range overflows".into()))?;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|e| Error::Verify(format!("cannot read /proc/{pid}/maps: {e}")))?;
    let mappings = executable_mappings(&maps);
    if !mappings
        .iter()
        .any(|m| m.start <= tramp.start && tramp_end <= m.end)
    {
        return Err(Error::Verify(format!(
            "trampoline {:#x}+{} is not inside one executable mapping",
            tramp.start, tramp.len
        )));
    }
    let pid = Pid::from_raw(pid);
    let code = read_remote(pid, tramp.start, usize::try_from(tramp.len).unwrap_or(0))?;
    let d = digest(&code);
    if !manifest.allows(&d) {
        return Err(Error::Verify(format!(
            "trampoline digest {} is not in the manifest",
            hex(&d)
        )));
    }
    let mut report = Report {
        digest: d,
        mappings: 0,
        bytes: 0,
        library_sites: 0,
        unintended: 0,
    };
    if let Some(why) = &manifest.unscanned {
        tracing::warn!(
            "fast path: process {pid}'s code outside its trampoline NOT scanned ({why}); only the trampoline digest was checked"
        );
        return Ok(report);
    }
    for m in &mappings {
        // The vsyscall page cannot be read and holds no guest code.
        if m.path == "[vsyscall]" {
            continue;
        }
        let len = usize::try_from(m.end - m.start).unwrap_or(0);
        let bytes = read_remote(pid, m.start, len)?;
        report.mappings += 1;
        report.bytes += len as u64;
        let raw = scan(&bytes);
        if raw.is_empty() {
            continue;
        }
        let decoded = pkru_instructions(&bytes, m.start);
        // A decoded instruction starts at most a few prefix bytes before its 0F opcode.
        report.unintended += raw
            .iter()
            .filter(|(o, _)| !decoded.iter().any(|(d, _)| (*d..*d + 5).contains(o)))
            .count();
        let system = is_system_library(&m.path);
        for (off, pat) in decoded {
            let addr = m.start + off as u64;
            if (tramp.start..tramp_end).contains(&addr) {
                continue;
            }
            if system {
                report.library_sites += 1;
                continue;
            }
            let what = match pat {
                Pattern::Wrpkru => "WRPKRU",
                Pattern::Xrstor => "XRSTOR",
            };
            return Err(Error::Verify(format!(
                "{what} at {addr:#x} in {} outside the trampoline",
                display_path(&m.path)
            )));
        }
    }
    Ok(report)
}

/// A distribution library the guest cannot have written: under the system library directories,
/// owned by root, writable by nobody else. Its PKRU-changing instructions are the system's
/// (glibc's `pkey_set`, the loader's XRSTOR), not the guest's; the guest's own executable,
/// anonymous executable memory and any file it could write are held to the rule.
fn is_system_library(path: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    const DIRS: [&str; 4] = ["/usr/lib/", "/lib/", "/usr/lib64/", "/lib64/"];
    if !DIRS.iter().any(|d| path.starts_with(d)) || path.contains("/../") {
        return false;
    }
    std::fs::metadata(path).is_ok_and(|m| m.uid() == 0 && m.mode() & 0o022 == 0)
}

fn display_path(p: &str) -> &str {
    if p.is_empty() {
        "an anonymous executable mapping"
    } else {
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_finds_patterns_not_lfence() {
        let code = [
            0x90, 0x0f, 0x01, 0xef, // wrpkru
            0x0f, 0xae, 0xe8, // lfence: not xrstor
            0x48, 0x0f, 0xae, 0x2f, // xrstor64 [rdi]
            0x0f, 0xc7, 0x1f, // xrstors [rdi]
            0x0f, 0x01, // truncated
        ];
        assert_eq!(
            scan(&code),
            vec![
                (1, Pattern::Wrpkru),
                (8, Pattern::Xrstor),
                (11, Pattern::Xrstor)
            ]
        );
    }

    #[test]
    fn decode_tells_instructions_from_straddling_bytes() {
        // rol $0xf,%r10d ; add %ebp,%edi  — bytes 0f 01 ef across the two.
        let straddle = [0x41, 0xc1, 0xc2, 0x0f, 0x01, 0xef];
        assert_eq!(scan(&straddle), vec![(3, Pattern::Wrpkru)]);
        assert!(pkru_instructions(&straddle, 0x1000).is_empty());
        // nop ; wrpkru ; xrstor64 [rdi]
        let real = [0x90, 0x0f, 0x01, 0xef, 0x48, 0x0f, 0xae, 0x2f];
        assert_eq!(
            pkru_instructions(&real, 0x1000),
            vec![(1, Pattern::Wrpkru), (4, Pattern::Xrstor)]
        );
    }

    #[test]
    fn manifest_parse_and_allow() {
        let d = digest(b"trampoline");
        let m = Manifest::parse(&format!("# approved\nsha256:{}  fp-pktgen\n\n", hex(&d))).unwrap();
        assert!(m.allows(&d));
        assert!(!m.allows(&digest(b"other")));
    }

    #[test]
    fn test_manifest_bad_digest() {
        assert!(Manifest::parse("abc\n").is_err());
        assert!(Manifest::parse(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn maps_parsing() {
        let maps = "\
55d0c0000000-55d0c0001000 r--p 00000000 fd:00 123 /usr/bin/x
55d0c0001000-55d0c0005000 r-xp 00001000 fd:00 123 /usr/bin/x
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0 [vdso]
7ffd00010000-7ffd00011000 rw-p 00000000 00:00 0
";
        let m = executable_mappings(maps);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].path, "/usr/bin/x");
        assert_eq!(m[0].start, 0x55d0c0001000);
        assert_eq!(m[1].path, "[vdso]");
    }

    #[test]
    fn verify_own_process() {
        // This test binary: pick a small range of our own code as the "trampoline" and approve
        // its digest; verification must then pass, or report a real finding.
        let f = verify_own_process as fn() as usize as u64;
        let t = Trampoline { start: f, len: 16 };
        let code = read_remote(Pid::this(), f, 16).unwrap();
        let mut manifest = Manifest::default();
        manifest.digests.insert(digest(&code));
        match verify(std::process::id() as i32, t, &manifest) {
            Ok(r) => assert!(r.mappings > 0 && r.bytes > 0),
            Err(Error::Verify(msg)) => assert!(msg.contains("outside the trampoline"), "{msg}"),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn without_mapping_scan_still_checks_the_digest_and_scans_nothing() {
        let f = verify_own_process as fn() as usize as u64;
        let t = Trampoline { start: f, len: 16 };
        let code = read_remote(Pid::this(), f, 16).unwrap();
        let unscanned = Manifest::default().without_mapping_scan("test");
        let e = verify(std::process::id() as i32, t, &unscanned).unwrap_err();
        assert!(e.to_string().contains("not in the manifest"), "{e}");
        let mut manifest = Manifest::default();
        manifest.digests.insert(digest(&code));
        let r = verify(
            std::process::id() as i32,
            t,
            &manifest.without_mapping_scan("test"),
        )
        .unwrap();
        assert_eq!((r.mappings, r.bytes), (0, 0), "nothing scanned");
    }

    #[test]
    fn test_trampoline_not_in_manifest() {
        let f = verify_own_process as fn() as usize as u64;
        let e = verify(
            std::process::id() as i32,
            Trampoline { start: f, len: 16 },
            &Manifest::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("not in the manifest"), "{e}");
    }

    #[test]
    fn test_trampoline_outside_executable_mappings() {
        let x = 5u64;
        let e = verify(
            std::process::id() as i32,
            Trampoline {
                start: &x as *const u64 as u64,
                len: 8,
            },
            &Manifest::default(),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("not inside one executable mapping"),
            "{e}"
        );
    }

    #[test]
    fn test_trampoline_length_zero_or_huge() {
        for len in [0, MAX_TRAMPOLINE + 1] {
            assert!(verify(
                std::process::id() as i32,
                Trampoline { start: 4096, len },
                &Manifest::default()
            )
            .is_err());
        }
    }
}
