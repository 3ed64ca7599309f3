//! The only module allowed `unsafe` code (the crate denies `unsafe_code` elsewhere): three
//! small calls into the operating system and the allocator that no safe crate in the tree
//! exposes. Each wrapper is safe to call and says why its block is sound.
#![allow(unsafe_code)]

/// The open-file limit (`RLIMIT_NOFILE`) as (soft, hard).
pub fn open_file_limit() -> std::io::Result<(u64, u64)> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid, writable rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((r.rlim_cur, r.rlim_max))
}

/// Sets the open-file limit (`RLIMIT_NOFILE`) to (soft, hard).
pub fn set_open_file_limit(soft: u64, hard: u64) -> std::io::Result<()> {
    let raised = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `raised` is a valid rlimit passed by reference; the kernel checks the values.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the calling thread's CPU priority to `nice` (Linux: `setpriority` on a thread id
/// applies to that thread only). Returns whether it worked.
pub fn set_thread_nice(nice: i32) -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain syscalls on the calling thread; no memory is passed.
        let rc = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, nice)
        };
        rc == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = nice;
        false
    }
}

/// Hands the free memory mimalloc keeps back to the system. A token-set reload frees the whole
/// previous set at once (tens of MB with 100,000 tokens); without this, those pages stay in
/// the process until mimalloc's own purge gets to them. mimalloc collects only the calling
/// thread's pages: call it on the thread that allocated the set (the token loader thread).
/// Harmless where mimalloc is not the global allocator (unit tests).
pub fn release_free_memory() {
    // SAFETY: mi_collect has no preconditions; it only walks mimalloc's own heaps.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
