//! `kvm-exit`: one VM exit per packet, through the KVM API. A minimal real-mode guest runs
//! `out %al, %dx` in a loop; every `out` exits to the host, which counts it as a packet: before
//! entering the guest it writes the packet into guest memory, after the exit it copies the
//! packet out. Each packet thus costs one VM entry and one VM exit (on a nested host, the exit
//! goes through the outer hypervisor too, which is what such a host pays).
//!
//! Without a usable /dev/kvm the scenario is reported unavailable, never approximated.
#![allow(unsafe_code)]

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vhost_user::driver::DriverMemory;

use crate::error::{Error, Result};

use super::{baseline, Env, Measurement, Scenario, Trial};

/// Guest RAM: 16 KiB at guest-physical 0.
const RAM_BYTES: usize = 0x4000;
/// Where the code sits (real mode, CS base 0).
const CODE_GPA: u64 = 0x1000;
/// Where the packet sits.
const PACKET_GPA: u64 = 0x2000;
/// The port the guest writes to (COM1: any port without an in-kernel device exits to us).
const PORT: u16 = 0x3f8;
/// `mov $0x3f8, %dx; 1: out %al, %dx; jmp 1b`.
const CODE: [u8; 6] = [0xba, 0xf8, 0x03, 0xee, 0xeb, 0xfd];

struct KvmExit {
    core: usize,
    vcpu: VcpuFd,
    _vm: VmFd,
    /// Last: the VM maps this memory and must be gone before it is unmapped.
    ram: DriverMemory,
    /// Host address of guest-physical 0 in `ram`'s own numbering.
    ram_base: u64,
}

fn unavailable(reason: String) -> Error {
    Error::Unavailable {
        scenario: "kvm-exit".into(),
        reason,
    }
}

pub fn open(env: &Env) -> Result<Box<dyn Scenario>> {
    let kvm = Kvm::new().map_err(|e| {
        unavailable(format!(
            "cannot open /dev/kvm: {e} (load kvm_intel or kvm_amd, and run as root or as a \
             member of the kvm group)"
        ))
    })?;
    let vm = kvm
        .create_vm()
        .map_err(|e| unavailable(format!("KVM_CREATE_VM: {e}")))?;
    let ram = DriverMemory::new("bench-kvm-ram", RAM_BYTES, false)
        .map_err(|e| Error::Kvm(format!("guest memory: {e}")))?;
    let desc = ram.region_desc();
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: desc.memory_size,
        userspace_addr: desc.userspace_addr,
    };
    // SAFETY: the region is `ram`'s live shared mapping of exactly `memory_size` bytes; `ram`
    // is stored beside the VM and dropped after it (field order), so the guest never sees
    // unmapped memory; nothing else in this process aliases that mapping as Rust references.
    unsafe { vm.set_user_memory_region(region) }
        .map_err(|e| Error::Kvm(format!("KVM_SET_USER_MEMORY_REGION: {e}")))?;
    let ram_base = desc.guest_phys_addr;
    ram.write(ram_base + CODE_GPA, &CODE)
        .map_err(|e| Error::Kvm(format!("loading the guest code: {e}")))?;
    let vcpu = vm
        .create_vcpu(0)
        .map_err(|e| Error::Kvm(format!("KVM_CREATE_VCPU: {e}")))?;
    let mut sregs = vcpu
        .get_sregs()
        .map_err(|e| Error::Kvm(format!("KVM_GET_SREGS: {e}")))?;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs)
        .map_err(|e| Error::Kvm(format!("KVM_SET_SREGS: {e}")))?;
    let mut regs = vcpu
        .get_regs()
        .map_err(|e| Error::Kvm(format!("KVM_GET_REGS: {e}")))?;
    regs.rip = CODE_GPA;
    regs.rflags = 2;
    vcpu.set_regs(&regs)
        .map_err(|e| Error::Kvm(format!("KVM_SET_REGS: {e}")))?;
    let mut s = KvmExit {
        core: env.cores.generator,
        vcpu,
        _vm: vm,
        ram,
        ram_base,
    };
    // One exit now, so that a guest that cannot run fails at setup, not mid-trial.
    s.exit_once()?;
    Ok(Box::new(s))
}

impl KvmExit {
    /// Runs the guest until its next `out`.
    fn exit_once(&mut self) -> Result<()> {
        match self.vcpu.run() {
            Ok(VcpuExit::IoOut(PORT, _)) => Ok(()),
            Ok(other) => Err(Error::Kvm(format!(
                "the guest exited with {other:?}, expected an I/O exit on port {PORT:#x}"
            ))),
            Err(e) => Err(Error::Kvm(format!("KVM_RUN: {e}"))),
        }
    }
}

impl Scenario for KvmExit {
    fn run(&mut self, trial: &Trial) -> Result<Measurement> {
        let core = self.core;
        let packet = self.ram_base + PACKET_GPA;
        baseline::measure(trial, core, |src, dst| {
            self.ram
                .write(packet, src)
                .map_err(|e| Error::Kvm(format!("writing the packet: {e}")))?;
            self.exit_once()?;
            self.ram
                .read(packet, dst)
                .map_err(|e| Error::Kvm(format!("reading the packet: {e}")))
        })
    }
}
