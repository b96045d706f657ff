//! How freed memory is handled once a job's data work starts.
//!
//! The binary allocates with mimalloc, which hands memory freed and not reused for a second
//! back to the kernel. That suits the consent snapshot's load, whose subject table grows by
//! doubling: the tables it outgrows go back, which keeps the load's peak down (438 MB
//! against 605 MB for a snapshot of 10M records). The data work is another matter: the
//! Parquet writer allocates fresh buffers of a MiB and more for every page, which kept
//! landing on memory handed back and zeroed again by the kernel on the next touch (12-14% of
//! a Parquet filter's CPU). From the data work on, the process keeps what it frees.

/// mimalloc's `purge_delay` option (its position in `mi_option_t`): milliseconds before
/// freed memory goes back to the kernel; -1 for never.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps every byte freed from now on for reuse, instead of handing it back to the kernel.
/// Without mimalloc as the allocator (the library's tests and benches), it changes nothing.
pub fn keep_freed_memory() {
    // SAFETY: sets one integer option, which mimalloc reads when it next frees memory.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // Its default (a second) tells it apart from every other option, so a mimalloc that
        // renumbered its options fails here instead of silently tuning something else.
        // SAFETY: reads and sets one integer option.
        unsafe {
            if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
                assert_eq!(libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY), 1000);
            }
            keep_freed_memory();
            assert_eq!(libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY), -1);
        }
    }
}
