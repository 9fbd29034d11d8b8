//! Process-wide settings of a server process.

/// Turns off transparent huge pages for this process (Linux; elsewhere a no-op).
///
/// A fault on a huge page zeroes 2 MiB while the request that touched the memory waits.
/// mimalloc asks the kernel for huge pages on its arenas, so under admission load a few such
/// faults in a row were the largest stalls of the service: 80 to 200 ms on a VM whose
/// memory the host backs lazily, at a p99 target of 2 ms. Without them the same load ran
/// with no loss of throughput (BENCHMARKS.md, "Admission service"). The switch is the
/// kernel's per-process flag (`PR_SET_THP_DISABLE`): it covers every mapping, those made
/// before the call included, and is inherited by child processes.
///
/// # Errors
/// The kernel refused the call (a kernel older than 3.15, or a seccomp filter).
pub fn disable_transparent_huge_pages() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    rustix::thread::disable_transparent_huge_pages(true)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn the_flag_is_set() {
        // Sets the flag of this test process (harmless to the other tests in it).
        disable_transparent_huge_pages().unwrap();
        assert!(rustix::thread::transparent_huge_pages_are_disabled().unwrap());
    }
}
