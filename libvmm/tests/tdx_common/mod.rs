//! Shared set-up for the TDX integration tests: one 1 GiB TDMR, the *simulated* TDX module, a frame
//! allocator shared between threads.
#![allow(dead_code)]

use std::sync::Mutex;

use libvmm::tdx::pool::PageAllocator;
use libvmm::tdx::sim::{SimConfig, SimModule, Window};
use libvmm::tdx::tdmr::{TdmrSet, SZ_1G, SZ_2M};

/// The TDMR: 1 GiB of convertible memory at 1 GiB.
pub const MEM: u64 = 0x4000_0000;
/// Frames the VMM hands to TDX code (control pages, S-EPT pages, PAMT pairs): the first 32 MiB.
pub const FRAMES: usize = 8192;
/// Guest private memory comes from here on.
pub const GUEST_POOL: u64 = MEM + 256 * SZ_2M;

pub fn tdmrs(dynamic: bool) -> TdmrSet {
    let info = SimConfig::default().info;
    let mut next = 0x1_0000_0000u64;
    TdmrSet::build(&[(MEM, SZ_1G)], &info, dynamic, |b| {
        let p = next;
        next += b;
        Some(p)
    })
    .unwrap()
}

pub fn sim(dynamic: bool, widen: bool) -> SimModule {
    let window = if widen { Window::All } else { Window::None };
    SimModule::new(
        SimConfig {
            window,
            ..SimConfig::default()
        },
        tdmrs(dynamic),
    )
}

/// The host's free frames, shared by all threads (the page allocator of this test host).
pub struct Frames(pub Mutex<Vec<u64>>);

impl Frames {
    pub fn new(count: usize) -> Self {
        Frames(Mutex::new(
            (0..count as u64).rev().map(|i| MEM + i * 4096).collect(),
        ))
    }
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    pub fn sorted(&self) -> Vec<u64> {
        let mut v = self.0.lock().unwrap().clone();
        v.sort();
        v
    }
}

pub struct FrameRef<'a>(pub &'a Frames);

impl PageAllocator for FrameRef<'_> {
    fn alloc_page(&mut self) -> Option<u64> {
        self.0 .0.lock().unwrap().pop()
    }
    fn free_page(&mut self, hpa: u64) -> Result<(), u64> {
        let mut v = self.0 .0.lock().unwrap();
        assert!(!v.contains(&hpa), "double free of {hpa:#x}");
        v.push(hpa);
        Ok(())
    }
}
