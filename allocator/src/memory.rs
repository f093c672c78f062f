//! Handing memory freed in bulk back to the kernel at once.
//!
//! `hc-allocator` runs on mimalloc (`src/main.rs`). A snapshot copies the state's map (about 57
//! bytes per allocation: 57 MiB at a million) and drops the copy once the snapshot is written.
//! mimalloc returns such pages to the kernel only from inside later allocator calls on the
//! thread that owns them, after a delay; a replica that goes quiet right after a snapshot — a
//! follower with no load, or any replica at night — would hold the dead copy resident until
//! load resumes, and a memory limit would count it. [`release_freed`] does that work now.
//!
//! This is the one module besides the agent's namespace switching that may use `unsafe`
//! (ARCHITECTURE.md, "Memory"): a call into mimalloc's C API.

/// Collects this thread's mimalloc heap and purges freed pages, returning them to the kernel.
/// Call it on the thread that allocated and dropped the memory, after dropping it. It walks
/// mimalloc's structures (its cost was not measured), so it is for after bulk frees, not a hot
/// path. In a process whose global allocator is not mimalloc it only tidies mimalloc's own,
/// unused heap.
#[allow(unsafe_code)]
pub fn release_freed() {
    // SAFETY: `mi_collect` takes no pointers and states no preconditions; it works on the
    // calling thread's heap and mimalloc's own segments, and frees only pages with no block in use.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
