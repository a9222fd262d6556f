//! The payload heap behind `sys_malloc` / `sys_realloc` / `sys_free` (Rust `std` payloads on the hermit
//! targets): guest RAM between the end of the payload's segments and the initial stack, managed by
//! `linked_list_allocator` (no_std, first fit, widely used by hobby and embedded kernels) rather than a
//! hand-written allocator. It lives in `arch/` because handing raw memory to an allocator and copying a
//! block on `realloc` are unsafe operations. The spin lock is shared by every CPU's threads; it is never
//! held across a thread switch (threads switch only at blocking calls, outside it) or in an interrupt
//! handler, so a CPU waits on it only while another one allocates.
use core::alloc::Layout;
use core::ptr::NonNull;

use linked_list_allocator::Heap;
use spin::Mutex;

static HEAP: Mutex<Heap> = Mutex::new(Heap::empty());

/// Hands `[start, end)` to the allocator. Called once, by the runtime's start, with memory nothing else
/// uses (the guest window above the payload's segments and below the initial stack).
pub(crate) fn init(start: u64, end: u64) {
    if end <= start {
        return;
    }
    // SAFETY: the range is guest RAM inside the window (identity-mapped, read+write in the nested tables)
    // that no segment, stack or VMM-written block uses (the caller computes it from the ELF program
    // headers and the boot info); `init` runs once, before any allocation.
    unsafe { HEAP.lock().init(start as *mut u8, (end - start) as usize) };
}

/// A block of `size` bytes aligned to `align`, or null.
pub(crate) fn alloc(size: usize, align: usize) -> *mut u8 {
    let Ok(layout) = Layout::from_size_align(size.max(1), align.max(1)) else {
        return core::ptr::null_mut();
    };
    HEAP.lock()
        .allocate_first_fit(layout)
        .map_or(core::ptr::null_mut(), |p| p.as_ptr())
}

/// Frees a block [`alloc`] returned with the same `size` and `align`.
pub(crate) fn free(ptr: *mut u8, size: usize, align: usize) {
    let (Some(p), Ok(layout)) = (
        NonNull::new(ptr),
        Layout::from_size_align(size.max(1), align.max(1)),
    ) else {
        return;
    };
    // SAFETY: std's System allocator passes back a pointer this heap returned with the same layout
    // (GlobalAlloc's contract, which hermit-abi's sys_free inherits).
    unsafe { HEAP.lock().deallocate(p, layout) };
}

/// Moves a block to one of `new_size` bytes (same alignment), keeping the common prefix.
pub(crate) fn realloc(ptr: *mut u8, size: usize, align: usize, new_size: usize) -> *mut u8 {
    let new = alloc(new_size, align);
    if !new.is_null() && !ptr.is_null() {
        // SAFETY: `ptr` is a live block of `size` bytes (caller's contract), `new` a fresh one of
        // `new_size`; distinct blocks never overlap.
        unsafe { core::ptr::copy_nonoverlapping(ptr, new, size.min(new_size)) };
        free(ptr, size, align);
    }
    new
}
