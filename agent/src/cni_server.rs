//! The CNI socket: a unix stream socket (mode 0600) served one request per connection, as
//! `hc_cni::protocol` describes. Only root peers are served (checked with SO_PEERCRED), and at
//! most `max_concurrent` requests at once: further connections wait in the listen backlog.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hc_cni::protocol::{AgentError, MAX_MESSAGE_BYTES, Reply, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, watch};
use tracing::{debug, warn};

use crate::agent::Agent;

/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long requests in flight may take to finish at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The only peer uid served: the runtime execs plugins as root.
const ALLOWED_UID: u32 = 0;

#[derive(Debug, thiserror::Error)]
#[error("socket {path}: {op}: {source}")]
pub struct BindError {
    path: String,
    op: &'static str,
    source: std::io::Error,
}

/// Binds the socket, replacing a stale one, with mode 0600.
pub fn bind(path: &Path) -> Result<UnixListener, BindError> {
    let err = |op, source| BindError { path: path.display().to_string(), op, source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err("create directory", e))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err("remove stale socket", e)),
    }
    let listener = UnixListener::bind(path).map_err(|e| err("bind", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| err("chmod", e))?;
    Ok(listener)
}

/// Accepts until `shutdown`, then waits (bounded) for requests in flight.
pub async fn serve(
    listener: UnixListener,
    agent: Arc<Agent>,
    max_concurrent: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(max_concurrent));
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = shutdown.changed() => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => { warn!(error = %e, "accept failed"); continue; }
            },
            _ = shutdown.changed() => break,
        };
        let agent = agent.clone();
        tokio::spawn(async move {
            serve_one(stream, &agent).await;
            drop(permit);
        });
    }
    let all = u32::try_from(max_concurrent).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN_TIMEOUT, permits.acquire_many(all)).await.is_err() {
        warn!("CNI requests still in flight at shutdown");
    }
}

async fn serve_one(mut stream: UnixStream, agent: &Agent) {
    let reply = match stream.peer_cred() {
        Ok(cred) if cred.uid() == ALLOWED_UID => match read_request(&mut stream).await {
            Ok(message) => match Request::decode(&message) {
                Ok(request) => agent.handle(request).await,
                Err(e) => e.to_reply(),
            },
            Err(e) => {
                debug!(error = %e, "reading the request failed");
                return;
            }
        },
        Ok(cred) => {
            warn!(uid = cred.uid(), pid = ?cred.pid(), "refusing a CNI request from a non-root peer");
            Reply::Err(AgentError::refused(format!("uid {} may not use hc-agent's socket", cred.uid())))
        }
        Err(e) => {
            warn!(error = %e, "cannot read the peer's credentials");
            return;
        }
    };
    if let Err(e) = stream.write_all(&reply.encode()).await {
        debug!(error = %e, "writing the reply failed (the plugin gave up?)");
    }
    let _ = stream.shutdown().await;
}

/// Reads up to the first newline or EOF, at most `MAX_MESSAGE_BYTES` (+1, so `decode` sees
/// an oversized message as such).
async fn read_request(stream: &mut UnixStream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    let read = async {
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                buf.truncate(pos + 1);
                break;
            }
            if buf.len() > MAX_MESSAGE_BYTES {
                break;
            }
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(READ_TIMEOUT, read)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no request within the read timeout"))??;
    Ok(buf)
}
