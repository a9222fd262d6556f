//! Host tests of the thread scheduler's bookkeeping (`src/runq.rs`, plain data). The file is compiled
//! here on its own: the runtime crate itself does not link into a host test binary (its `_start`
//! collides with the host's).
#[path = "../src/runq.rs"]
mod runq;
