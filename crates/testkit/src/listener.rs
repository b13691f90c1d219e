//! Loopback listeners for test scaffolding that share the servers' port reservations.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::ops::Deref;

use crate::process::Port;

/// A listener on a free `127.0.0.1` port, reserved like a server's port until dropped.
///
/// A port a test binds itself with `TcpListener::bind(("127.0.0.1", 0))` can be one that a
/// stopped server of the same test binary keeps for its restart, which then fails. Binding
/// through this type skips such ports, and no server started later is handed this one. It
/// dereferences to the [`TcpListener`].
///
/// ```no_run
/// use infra_testkit::LoopbackListener;
///
/// let listener = LoopbackListener::bind().unwrap();
/// let addr = listener.addr(); // a stand-in server for the code under test
/// for stream in listener.incoming() {
///     // ...
/// #   break;
/// }
/// ```
pub struct LoopbackListener {
    listener: TcpListener,
    addr: SocketAddr,
    _port: Port,
}

impl LoopbackListener {
    /// Binds a free loopback port that no server or proxy of this process holds.
    ///
    /// # Errors
    ///
    /// The error of binding the port.
    pub fn bind() -> io::Result<Self> {
        let (listener, port) = Port::bind_loopback()?;
        let addr = listener.local_addr()?;
        Ok(Self {
            listener,
            addr,
            _port: port,
        })
    }

    /// The address the listener is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Deref for LoopbackListener {
    type Target = TcpListener;

    fn deref(&self) -> &TcpListener {
        &self.listener
    }
}

impl fmt::Debug for LoopbackListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopbackListener")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_is_reserved_while_the_listener_lives() {
        let listener = LoopbackListener::bind().unwrap();
        assert!(listener.addr().ip().is_loopback());
        assert_eq!(listener.local_addr().unwrap(), listener.addr());
        assert!(crate::process::is_reserved(listener.addr().port()));
    }
}
