//! The global allocator of the `kelp` binary: the system allocator, except that huge
//! allocations are reserved with `mmap(MAP_NORESERVE)`.
//!
//! Why: the `kafka-protocol` codec (0.18) sizes a decoded array with
//! `Vec::with_capacity(count)` straight from the count on the wire, before it checks that the
//! frame holds that many elements. A 40-byte request announcing 2^31 elements thus asks for
//! hundreds of GiB, the system allocator fails, and Rust aborts the whole process. No legal
//! request can need an allocation anywhere near [`HUGE_ALLOCATION_BYTES`] (frames are capped by
//! `--max-request-bytes`), so such a reservation is always a lie told by a client: reserving
//! address space without committing memory lets the decoder run into the end of the frame and
//! fail with an ordinary error, after which the mapping is released. Elements are written only
//! as they are decoded, one per byte of input at most, so what gets committed stays bounded by
//! the frame size.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at least this large are address-space reservations (see the module doc).
pub const HUGE_ALLOCATION_BYTES: usize = 1 << 30;

pub struct KelpAlloc;

fn page_size() -> usize {
    4096
}

unsafe fn map(size: usize) -> *mut u8 {
    let p = libc::mmap(
        std::ptr::null_mut(),
        size,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
        -1,
        0,
    );
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p as *mut u8
    }
}

fn is_huge(layout: &Layout) -> bool {
    layout.size() >= HUGE_ALLOCATION_BYTES && layout.align() <= page_size()
}

// SAFETY: every pointer handed out comes from System or from mmap of at least `layout.size()`
// bytes with page alignment (>= the requested alignment, checked in `is_huge`), and is returned
// to the same source, decided by the same size test on the same layout.
unsafe impl GlobalAlloc for KelpAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_huge(&layout) {
            map(layout.size())
        } else {
            System.alloc(layout)
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_huge(&layout) {
            // Anonymous mappings are zero-filled.
            map(layout.size())
        } else {
            System.alloc_zeroed(layout)
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_huge(&layout) {
            libc::munmap(ptr as *mut libc::c_void, layout.size());
        } else {
            System.dealloc(ptr, layout)
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        if !is_huge(&layout) && !is_huge(&new_layout) {
            return System.realloc(ptr, layout, new_size);
        }
        let new = self.alloc(new_layout);
        if !new.is_null() {
            std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            self.dealloc(ptr, layout);
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lying_capacity_is_reserved_not_committed() {
        let a = KelpAlloc;
        let layout = Layout::from_size_align(200 << 30, 8).unwrap();
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null(), "a 200 GiB reservation must succeed");
            *p = 7;
            assert_eq!(*p, 7);
            let p2 = a.realloc(p, layout, 16);
            assert_eq!(*p2, 7);
            a.dealloc(p2, Layout::from_size_align(16, 8).unwrap());
        }
    }
}
