//! The plugin's side of the protocol: connect to the agent's socket, send one request, read
//! one reply, all within one deadline. Blocking std I/O: the plugin does one call and exits.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::protocol::{MAX_MESSAGE_BYTES, ProtocolError, Reply, Request};

/// Where the agent is and how long to wait for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentTarget {
    pub socket: PathBuf,
    /// For the whole call: connect, send and the agent's work until its reply.
    pub timeout: Duration,
}

/// Why no reply came back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens: the socket file is missing, nobody accepts (ECONNREFUSED), or we may not
    /// connect.
    #[error("cannot connect: {reason}")]
    Connect { reason: String },
    #[error("no reply within {} s", timeout.as_secs_f64())]
    Timeout { timeout: Duration },
    /// The connection broke, or the agent closed it without a reply (it crashed or restarted).
    #[error("{reason}")]
    Connection { reason: String },
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
}

/// Sends `request` to the agent at `target` and returns its reply.
pub fn call(target: &AgentTarget, request: &Request) -> Result<Reply, ClientError> {
    let deadline = Instant::now() + target.timeout;
    let timed_out = || ClientError::Timeout { timeout: target.timeout };
    let mut stream = connect(&target.socket, target.timeout)?;

    let remaining = remaining(deadline).ok_or_else(timed_out)?;
    stream.set_write_timeout(Some(remaining)).map_err(broken)?;
    match stream.write_all(&request.encode()) {
        Ok(()) => {
            // Tell the agent the request is complete; an agent reading to EOF needs it, one
            // reading to the newline does not, so a failure here is not fatal.
            let _ = stream.shutdown(Shutdown::Write);
        }
        Err(e) => {
            let e = io_error(e, target.timeout);
            if matches!(e, ClientError::Timeout { .. }) {
                return Err(e);
            }
            // The agent may have answered without reading (refusing while overloaded) and
            // closed: its reply is still readable and says more than the broken pipe.
            return read_message(&mut stream, deadline, target.timeout)
                .map_err(|_| e)
                .and_then(|message| Ok(Reply::decode(&message)?));
        }
    }

    let message = read_message(&mut stream, deadline, target.timeout)?;
    Ok(Reply::decode(&message)?)
}

/// std has no connect timeout for unix sockets. A connect blocks only while the agent's accept
/// backlog is full, so it runs on a helper thread that is abandoned on timeout: the plugin
/// process exits right after.
fn connect(socket: &Path, timeout: Duration) -> Result<UnixStream, ClientError> {
    let (tx, rx) = mpsc::channel();
    let path = socket.to_owned();
    thread::Builder::new()
        .name("hc-connect".into())
        .spawn(move || {
            // The receiver may be gone after a timeout; nothing is left to tell.
            let _ = tx.send(UnixStream::connect(path));
        })
        .map_err(|e| ClientError::Connect { reason: format!("cannot start the connect thread: {e}") })?;
    match rx.recv_timeout(timeout) {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(ClientError::Connect { reason: e.to_string() }),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(ClientError::Timeout { timeout }),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            Err(ClientError::Connect { reason: "the connect thread ended without an answer".into() })
        }
    }
}

/// Reads one message: up to the first newline, or to EOF.
fn read_message(stream: &mut UnixStream, deadline: Instant, timeout: Duration) -> Result<Vec<u8>, ClientError> {
    let mut message = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    loop {
        let remaining = remaining(deadline).ok_or(ClientError::Timeout { timeout })?;
        stream.set_read_timeout(Some(remaining)).map_err(broken)?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // A peer that closes with our request unread resets the connection after its
            // reply: that reply is complete.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && !message.is_empty() => return Ok(message),
            Err(e) => return Err(io_error(e, timeout)),
        };
        if n == 0 {
            if message.is_empty() {
                return Err(ClientError::Connection {
                    reason: "hc-agent closed the connection without a reply".into(),
                });
            }
            return Ok(message);
        }
        let newline = chunk[..n].iter().position(|b| *b == b'\n');
        message.extend_from_slice(&chunk[..newline.map_or(n, |i| i + 1)]);
        if message.len() > MAX_MESSAGE_BYTES {
            return Err(ProtocolError::TooLarge.into());
        }
        if newline.is_some() {
            return Ok(message);
        }
    }
}

fn remaining(deadline: Instant) -> Option<Duration> {
    deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())
}

fn io_error(e: io::Error, timeout: Duration) -> ClientError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::Timeout { timeout },
        _ => broken(e),
    }
}

fn broken(e: io::Error) -> ClientError {
    ClientError::Connection { reason: format!("connection to hc-agent failed: {e}") }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;
    use crate::protocol::{Call, Network, Plugin, StatusRequest};
    use crate::result::CniResult;

    fn status() -> Request {
        Request::new(
            Plugin::Bridge,
            Call::Status(StatusRequest {
                network: Network {
                    name: "hc".into(),
                    cni_version: "1.1.0".into(),
                    config: Default::default(),
                    dns: Default::default(),
                },
            }),
        )
    }

    fn target(dir: &tempfile::TempDir, timeout: Duration) -> AgentTarget {
        AgentTarget { socket: dir.path().join("agent.sock"), timeout }
    }

    /// Runs `serve` on the one connection a test's call makes.
    fn agent(listener: UnixListener, serve: impl FnOnce(UnixStream) + Send + 'static) -> thread::JoinHandle<()> {
        thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            serve(stream);
        })
    }

    #[test]
    fn a_missing_socket_is_a_connect_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = call(&target(&dir, Duration::from_secs(5)), &status()).expect_err("no agent");
        assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
    }

    #[test]
    fn a_socket_nobody_listens_on_is_a_connect_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = target(&dir, Duration::from_secs(5));
        drop(UnixListener::bind(&t.socket).expect("bind"));
        let err = call(&t, &status()).expect_err("no agent");
        assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
    }

    #[test]
    fn sends_one_line_and_reads_one_reply() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = target(&dir, Duration::from_secs(5));
        let listener = UnixListener::bind(&t.socket).expect("bind");
        let served = agent(listener, |mut stream| {
            // Read to EOF: the client half-closes after its line.
            let mut request = Vec::new();
            stream.read_to_end(&mut request).expect("read");
            assert_eq!(Request::decode(&request).expect("decodes"), status());
            stream.write_all(&Reply::Ok(CniResult::default()).encode()).expect("write");
        });
        assert_eq!(call(&t, &status()), Ok(Reply::Ok(CniResult::default())));
        served.join().expect("agent thread");
    }

    #[test]
    fn a_reply_without_newline_ends_at_eof() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = target(&dir, Duration::from_secs(5));
        let served = agent(UnixListener::bind(&t.socket).expect("bind"), |mut stream| {
            stream.write_all(br#"{"err":{"code":50,"msg":"no lease"}}"#).expect("write");
        });
        let reply = call(&t, &status()).expect("reply");
        assert!(matches!(reply, Reply::Err(e) if e.code == 50));
        served.join().expect("agent thread");
    }

    #[test]
    fn an_agent_that_hangs_up_is_a_connection_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = target(&dir, Duration::from_secs(5));
        let served = agent(UnixListener::bind(&t.socket).expect("bind"), drop);
        let err = call(&t, &status()).expect_err("no reply");
        assert!(matches!(err, ClientError::Connection { .. }), "{err:?}");
        served.join().expect("agent thread");
    }

    #[test]
    fn an_agent_that_never_answers_times_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = target(&dir, Duration::from_millis(200));
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let served = agent(UnixListener::bind(&t.socket).expect("bind"), move |stream| {
            // Hold the connection open until the client gave up.
            let _ = done_rx.recv();
            drop(stream);
        });
        let started = Instant::now();
        let err = call(&t, &status()).expect_err("no reply");
        assert_eq!(err, ClientError::Timeout { timeout: Duration::from_millis(200) });
        assert!(started.elapsed() < Duration::from_secs(5));
        done_tx.send(()).expect("agent waits");
        served.join().expect("agent thread");
    }

    #[test]
    fn an_oversized_reply_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = target(&dir, Duration::from_secs(5));
        let served = agent(UnixListener::bind(&t.socket).expect("bind"), |mut stream| {
            let junk = vec![b' '; MAX_MESSAGE_BYTES + 10];
            // The client stops reading once over the limit; a broken pipe here is expected.
            let _ = stream.write_all(&junk);
        });
        let err = call(&t, &status()).expect_err("too large");
        assert_eq!(err, ClientError::Protocol(ProtocolError::TooLarge));
        served.join().expect("agent thread");
    }
}
