//! After `fork()`, the child must not repeat its parent's ids: the generator state of the
//! forking thread is copied into the child, so without a reseed both would draw the same
//! sequence. One test in its own binary, so that no other test thread is running (and
//! holding a lock the child would need) at the moment of the fork.
#![cfg(all(unix, not(infra_loom)))]

use infra_trace_ctx::{SpanId, TraceId};

/// The ids the calling thread draws next: a trace id and a span id, as text.
fn next_ids() -> String {
    format!("{} {}", TraceId::random(), SpanId::random())
}

#[test]
fn a_forked_child_draws_ids_of_its_own() {
    // Seed this thread's generator before forking, as a pre-forking server does.
    let _ = TraceId::random();
    let mut fds = [0; 2];
    #[allow(unsafe_code)]
    // SAFETY: `fds` has room for the two descriptors `pipe` writes.
    let piped = unsafe { libc::pipe(fds.as_mut_ptr()) };
    assert_eq!(piped, 0, "pipe");
    let [read_end, write_end] = fds;
    #[allow(unsafe_code)]
    // SAFETY: the child only draws ids, writes them to the pipe and leaves with `_exit`,
    // never returning into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        let ids = next_ids();
        #[allow(unsafe_code)]
        // SAFETY: `ids` is a live buffer of `ids.len()` bytes; `_exit` ends the child
        // without running the parent's atexit handlers or destructors.
        unsafe {
            let written = libc::write(write_end, ids.as_ptr().cast(), ids.len());
            libc::_exit(i32::from(usize::try_from(written) != Ok(ids.len())));
        }
    }
    let parent_ids = next_ids();
    #[allow(unsafe_code)]
    // SAFETY: the write end belongs to this process; closing it lets `read` see the end.
    unsafe {
        libc::close(write_end);
    }
    let mut received = Vec::new();
    let mut buffer = [0u8; 128];
    loop {
        #[allow(unsafe_code)]
        // SAFETY: `buffer` has room for `buffer.len()` bytes.
        let n = unsafe { libc::read(read_end, buffer.as_mut_ptr().cast(), buffer.len()) };
        match usize::try_from(n) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(_) => panic!("read from the child failed"),
        }
    }
    let mut status = 0;
    #[allow(unsafe_code)]
    // SAFETY: `pid` is this process's child; `status` is a valid out pointer.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed"
    );
    let child_ids = String::from_utf8(received).unwrap();
    assert_eq!(child_ids.len(), parent_ids.len(), "{child_ids:?}");
    let (child_trace, child_span) = child_ids.split_once(' ').unwrap();
    let (parent_trace, parent_span) = parent_ids.split_once(' ').unwrap();
    assert_ne!(
        child_trace, parent_trace,
        "the child repeated the parent's trace id"
    );
    assert_ne!(
        child_span, parent_span,
        "the child repeated the parent's span id"
    );
}
