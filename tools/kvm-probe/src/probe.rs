//! The Linux side: modules, /dev/kvm, the VM and its guest.
use std::ffi::CString;
use std::io::Write;

use kvm_bindings::{kvm_segment, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};

use crate::{BATCHES, N};

/// The guest (assembled from the listing below with binutils `as`, `.intel_syntax`, `.code64`): RSI
/// selects the loop (0 baseline, 1 CPUID, 2 `out 0x10, al`, 3 `in al, 0x21`), RDI the iterations; the
/// elapsed TSC ticks are left in RAX and reported with `out 0x11, al`, then it starts over.
///
/// ```text
/// start: mov r9, rdi; lfence; rdtsc; shl rdx, 32; or rax, rdx; mov r8, rax
///        cmp rsi, 1; je 1f; cmp rsi, 2; je 2f; cmp rsi, 3; je 3f
/// 0:     mov eax, 0x40000000; xor ecx, ecx;                dec r9; jnz 0b; jmp 9f
/// 1:     mov eax, 0x40000000; xor ecx, ecx; cpuid;         dec r9; jnz 1b; jmp 9f
/// 2:     mov eax, 0x40000000; xor ecx, ecx; out 0x10, al;  dec r9; jnz 2b; jmp 9f
/// 3:     mov eax, 0x40000000; xor ecx, ecx; in al, 0x21;   dec r9; jnz 3b
/// 9:     lfence; rdtsc; shl rdx, 32; or rax, rdx; sub rax, r8; out 0x11, al; jmp start
/// ```
const GUEST: [u8; 115] = [
    0x49, 0x89, 0xf9, 0x0f, 0xae, 0xe8, 0x0f, 0x31, 0x48, 0xc1, 0xe2, 0x20, 0x48, 0x09, 0xd0, 0x49,
    0x89, 0xc0, 0x48, 0x83, 0xfe, 0x01, 0x74, 0x1a, 0x48, 0x83, 0xfe, 0x02, 0x74, 0x24, 0x48, 0x83,
    0xfe, 0x03, 0x74, 0x2e, 0xb8, 0x00, 0x00, 0x00, 0x40, 0x31, 0xc9, 0x49, 0xff, 0xc9, 0x75, 0xf4,
    0xeb, 0x2e, 0xb8, 0x00, 0x00, 0x00, 0x40, 0x31, 0xc9, 0x0f, 0xa2, 0x49, 0xff, 0xc9, 0x75, 0xf2,
    0xeb, 0x1e, 0xb8, 0x00, 0x00, 0x00, 0x40, 0x31, 0xc9, 0xe6, 0x10, 0x49, 0xff, 0xc9, 0x75, 0xf2,
    0xeb, 0x0e, 0xb8, 0x00, 0x00, 0x00, 0x40, 0x31, 0xc9, 0xe4, 0x21, 0x49, 0xff, 0xc9, 0x75, 0xf2,
    0x0f, 0xae, 0xe8, 0x0f, 0x31, 0x48, 0xc1, 0xe2, 0x20, 0x48, 0x09, 0xd0, 0x4c, 0x29, 0xc0, 0xe6,
    0x11, 0xeb, 0x8d,
];

const MEM_SIZE: usize = 0x20_0000;
const PML4: u64 = 0x1000;
const PDPT: u64 = 0x2000;
const PD: u64 = 0x3000;
const CODE: u64 = 0x8000;
const STACK_TOP: u64 = 0x10_0000;

/// The modules, in dependency order (`modinfo -F depends`), under /modules in the initramfs.
const MODULES: [&str; 4] = ["irqbypass.ko", "kvm.ko", "ccp.ko", "kvm-amd.ko"];

fn fail(what: &str) -> ! {
    println!("KVM_PROBE_ERROR {what}");
    let _ = std::io::stdout().flush();
    reboot()
}

fn reboot() -> ! {
    // SAFETY: sync and reboot take no pointers; RB_AUTOBOOT with QEMU's -no-reboot ends QEMU.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_AUTOBOOT);
    }
    loop {
        std::thread::park();
    }
}

fn mount(src: &str, dir: &str, fstype: &str) {
    let _ = std::fs::create_dir_all(dir);
    let (s, d, t) = (
        CString::new(src).unwrap(),
        CString::new(dir).unwrap(),
        CString::new(fstype).unwrap(),
    );
    // SAFETY: valid NUL-terminated strings; no mount data.
    unsafe { libc::mount(s.as_ptr(), d.as_ptr(), t.as_ptr(), 0, std::ptr::null()) };
}

fn load_modules() {
    for m in MODULES {
        let path = format!("/modules/{m}");
        let f = std::fs::File::open(&path).unwrap_or_else(|e| fail(&format!("open {path}: {e}")));
        let params = CString::new("").unwrap();
        use std::os::fd::AsRawFd;
        // SAFETY: an open module file, an empty parameter string, no flags.
        let rc =
            unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), params.as_ptr(), 0) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                fail(&format!("finit_module {m}: {e}"));
            }
        }
    }
}

fn param(name: &str) -> String {
    std::fs::read_to_string(format!("/sys/module/kvm_amd/parameters/{name}"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Runs the guest loop `mode` for `n` iterations; returns the elapsed ticks.
fn run_loop(vcpu: &mut VcpuFd, mode: u64, n: u64) -> u64 {
    let mut regs = vcpu
        .get_regs()
        .unwrap_or_else(|e| fail(&format!("get_regs: {e}")));
    regs.rip = CODE;
    regs.rsi = mode;
    regs.rdi = n;
    regs.rsp = STACK_TOP;
    regs.rflags = 2;
    vcpu.set_regs(&regs)
        .unwrap_or_else(|e| fail(&format!("set_regs: {e}")));
    loop {
        match vcpu.run() {
            Ok(VcpuExit::IoOut(0x10, _)) => {}
            Ok(VcpuExit::IoOut(0x11, _)) => break,
            Ok(VcpuExit::IoIn(_, data)) => data.fill(0xff),
            Ok(other) => fail(&format!("unexpected exit {other:?}")),
            Err(e) => fail(&format!("KVM_RUN: {e}")),
        }
    }
    vcpu.get_regs()
        .unwrap_or_else(|e| fail(&format!("get_regs: {e}")))
        .rax
}

/// Per-iteration cost of `mode` over the baseline loop: the median of [`BATCHES`] batches.
fn figure(vcpu: &mut VcpuFd, mode: u64) -> f64 {
    // One warm-up pair: the first pass takes page faults and cache misses in both KVM and QEMU.
    run_loop(vcpu, 0, N);
    run_loop(vcpu, mode, N);
    let mut v: Vec<f64> = (0..BATCHES)
        .map(|_| {
            let base = run_loop(vcpu, 0, N);
            let with = run_loop(vcpu, mode, N);
            (with as f64 - base as f64) / N as f64
        })
        .collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

pub fn main() {
    mount("devtmpfs", "/dev", "devtmpfs");
    mount("sysfs", "/sys", "sysfs");
    mount("proc", "/proc", "proc");
    load_modules();
    let kvm = Kvm::new().unwrap_or_else(|e| fail(&format!("/dev/kvm: {e}")));
    let vm = kvm
        .create_vm()
        .unwrap_or_else(|e| fail(&format!("KVM_CREATE_VM: {e}")));
    vm.create_irq_chip()
        .unwrap_or_else(|e| fail(&format!("KVM_CREATE_IRQCHIP: {e}")));

    // Guest memory: anonymous, 2 MiB, identity-mapped by one 2 MiB page.
    // SAFETY: a fresh private anonymous mapping, owned by this process until it reboots.
    let mem = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            MEM_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if mem == libc::MAP_FAILED {
        fail("mmap");
    }
    // SAFETY: `mem` is MEM_SIZE bytes, readable and writable, not aliased elsewhere.
    let m = unsafe { std::slice::from_raw_parts_mut(mem as *mut u8, MEM_SIZE) };
    let put = |m: &mut [u8], at: u64, v: u64| {
        m[at as usize..at as usize + 8].copy_from_slice(&v.to_le_bytes())
    };
    put(m, PML4, PDPT | 3);
    put(m, PDPT, PD | 3);
    put(m, PD, 0x83); // present, writable, 2 MiB page at 0
    m[CODE as usize..CODE as usize + GUEST.len()].copy_from_slice(&GUEST);
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: MEM_SIZE as u64,
        userspace_addr: mem as u64,
    };
    // SAFETY: the region is the mapping above, which outlives the VM.
    unsafe { vm.set_user_memory_region(region) }
        .unwrap_or_else(|e| fail(&format!("KVM_SET_USER_MEMORY_REGION: {e}")));

    let mut vcpu = vm
        .create_vcpu(0)
        .unwrap_or_else(|e| fail(&format!("KVM_CREATE_VCPU: {e}")));
    let cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .unwrap_or_else(|e| fail(&format!("KVM_GET_SUPPORTED_CPUID: {e}")));
    vcpu.set_cpuid2(&cpuid)
        .unwrap_or_else(|e| fail(&format!("KVM_SET_CPUID2: {e}")));

    let mut sregs = vcpu
        .get_sregs()
        .unwrap_or_else(|e| fail(&format!("get_sregs: {e}")));
    let code = kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: 0x8,
        type_: 0xb,
        present: 1,
        dpl: 0,
        db: 0,
        s: 1,
        l: 1,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    let data = kvm_segment {
        selector: 0x10,
        type_: 0x3,
        l: 0,
        db: 1,
        ..code
    };
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.cr3 = PML4;
    sregs.cr4 = 1 << 5; // PAE
    sregs.cr0 = 0x8000_0033; // PG | NE | ET | MP | PE
    sregs.efer = 0x500; // LME | LMA
    vcpu.set_sregs(&sregs)
        .unwrap_or_else(|e| fail(&format!("set_sregs: {e}")));

    let cpuid_cost = figure(&mut vcpu, 1);
    let out_cost = figure(&mut vcpu, 2);
    let pic_cost = figure(&mut vcpu, 3);
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "KVM_PROBE cpuid={cpuid_cost:.2} out={out_cost:.2} pic_in={pic_cost:.2} n={N} batches={BATCHES} nrips={} npt={} kernel={}",
        param("nrips"),
        param("npt"),
        release.trim()
    );
    let _ = std::io::stdout().flush();
    reboot()
}
