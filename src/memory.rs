//! The memory allocator: mimalloc, the global allocator of the `tollgate` binary (`main.rs`).

/// Hands the free memory mimalloc keeps back to the system. A token-set reload frees the whole
/// previous set at once (tens of MB with 100,000 tokens); without this, those pages stay in
/// the process until mimalloc's own purge gets to them. mimalloc collects only the calling
/// thread's pages: call it on the thread that allocated the set (the token loader thread).
/// Harmless where mimalloc is not the global allocator (unit tests).
pub fn release_free_memory() {
    // SAFETY: mi_collect has no preconditions; it only walks mimalloc's own heaps.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
