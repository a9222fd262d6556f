//! Fixed-capacity page pools: the VMM's only source of pages for TDX, no general heap.
//!
//! Two kinds, as in the Dynamic PAMT series (`struct tdx_prealloc`, topped up before the fault so nothing
//! allocates under the locks of the fault path):
//! - [`FramePool`]: the host's free 4 KiB frames handed to TDX code at set-up (the page allocator here).
//! - [`PagePool`]: a per-vCPU pre-allocation, topped up from a [`PageAllocator`] before each fault and
//!   drained on the fault path (one for DPAMT page pairs, one for external S-EPT pages).
//!
//! Both are `heapless::Vec` stacks; running dry is an [`PoolEmpty`] error, never a panic.
#![forbid(unsafe_code)]

/// No page left in a pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolEmpty;

/// Where TDX code gets host pages from and returns them to.
pub trait PageAllocator {
    fn alloc_page(&mut self) -> Option<u64>;
    /// Returns a page; `Err(page)` when the allocator has no room (the caller keeps it).
    fn free_page(&mut self, hpa: u64) -> Result<(), u64>;
}

/// A fixed stack of free 4 KiB host frames.
pub struct FramePool<const N: usize> {
    free: heapless::Vec<u64, N>,
}

impl<const N: usize> Default for FramePool<N> {
    fn default() -> Self {
        Self {
            free: heapless::Vec::new(),
        }
    }
}

impl<const N: usize> FramePool<N> {
    /// Frames `[base, base + count * 4 KiB)`; the rest beyond capacity is not taken.
    pub fn from_range(base: u64, count: usize) -> Self {
        let mut p = Self::default();
        for i in (0..count.min(N)).rev() {
            let _ = p.free.push(base + (i as u64) * 4096);
        }
        p
    }
    pub fn len(&self) -> usize {
        self.free.len()
    }
    pub fn is_empty(&self) -> bool {
        self.free.is_empty()
    }
}

impl<const N: usize> PageAllocator for FramePool<N> {
    fn alloc_page(&mut self) -> Option<u64> {
        self.free.pop()
    }
    fn free_page(&mut self, hpa: u64) -> Result<(), u64> {
        self.free.push(hpa)
    }
}

/// A per-vCPU pre-allocation of pages for the fault path.
pub struct PagePool<const N: usize> {
    pages: heapless::Vec<u64, N>,
}

impl<const N: usize> Default for PagePool<N> {
    fn default() -> Self {
        Self {
            pages: heapless::Vec::new(),
        }
    }
}

impl<const N: usize> PagePool<N> {
    /// Fills the pool to at least `want` pages (at most its capacity) from `alloc`, outside any lock.
    pub fn topup<A: PageAllocator>(&mut self, alloc: &mut A, want: usize) -> Result<(), PoolEmpty> {
        if want > N {
            return Err(PoolEmpty);
        }
        while self.pages.len() < want {
            let page = alloc.alloc_page().ok_or(PoolEmpty)?;
            // Cannot fail: len < want <= N.
            let _ = self.pages.push(page);
        }
        Ok(())
    }
    pub fn take(&mut self) -> Result<u64, PoolEmpty> {
        self.pages.pop().ok_or(PoolEmpty)
    }
    /// Takes two pages or none.
    pub fn take_pair(&mut self) -> Result<[u64; 2], PoolEmpty> {
        if self.pages.len() < 2 {
            return Err(PoolEmpty);
        }
        let a = self.pages.pop().ok_or(PoolEmpty)?;
        let b = self.pages.pop().ok_or(PoolEmpty)?;
        Ok([a, b])
    }
    /// Puts a page back; `Err(page)` when full.
    pub fn give(&mut self, hpa: u64) -> Result<(), u64> {
        self.pages.push(hpa)
    }
    pub fn len(&self) -> usize {
        self.pages.len()
    }
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }
    /// The pooled pages (accounting in tests and the bench).
    pub fn contents(&self) -> impl Iterator<Item = u64> + '_ {
        self.pages.iter().copied()
    }
    /// Returns every page to `alloc` (vCPU teardown); `Err` leaves the pages the allocator refused here.
    pub fn drain_into<A: PageAllocator>(&mut self, alloc: &mut A) -> Result<(), u64> {
        while let Some(p) = self.pages.pop() {
            if let Err(p) = alloc.free_page(p) {
                let _ = self.pages.push(p);
                return Err(p);
            }
        }
        Ok(())
    }
}

impl<const N: usize> PageAllocator for PagePool<N> {
    fn alloc_page(&mut self) -> Option<u64> {
        self.pages.pop()
    }
    fn free_page(&mut self, hpa: u64) -> Result<(), u64> {
        self.pages.push(hpa)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhaustion_is_an_error_and_pairs_are_all_or_nothing() {
        let mut frames = FramePool::<4>::from_range(0x10_0000, 3);
        let mut pool = PagePool::<4>::default();
        assert_eq!(
            pool.topup(&mut frames, 5),
            Err(PoolEmpty),
            "more than capacity"
        );
        assert_eq!(pool.topup(&mut frames, 4), Err(PoolEmpty), "only 3 frames");
        assert_eq!(pool.len(), 3);
        assert!(pool.take_pair().is_ok());
        assert_eq!(pool.take_pair(), Err(PoolEmpty));
        assert_eq!(pool.len(), 1, "a failed pair leaves the single page");
        assert!(pool.take().is_ok());
        assert_eq!(pool.take(), Err(PoolEmpty));
        pool.give(0x5000).unwrap();
        pool.drain_into(&mut frames).unwrap();
        assert_eq!(frames.len(), 1);
    }
}
