//! [`Connection`]: the allocator client, replaced by a fresh one (new TCP connections) after a
//! call timed out or found no replica.
//!
//! A gRPC channel keeps using an HTTP/2 connection until the kernel gives up on it; across a
//! partition that silently dropped packets that can take minutes. Reconnecting after a failure
//! bounds the agent's recovery after healing by its own retry period instead.

use std::sync::{Arc, RwLock};

use hc_api::client::{Client, ClientConfig};
use hc_api::{ErrorKind, IpamError};
use tracing::debug;

pub struct Connection {
    endpoints: Vec<String>,
    config: ClientConfig,
    /// The current client. Guards only the swap; calls run on a cloned `Arc` outside the lock.
    current: RwLock<Arc<Client>>,
}

impl Connection {
    pub fn new(endpoints: Vec<String>, config: ClientConfig) -> Result<Connection, IpamError> {
        let client = Arc::new(Client::new(endpoints.clone(), config.clone())?);
        Ok(Connection { endpoints, config, current: RwLock::new(client) })
    }

    pub fn client(&self) -> Arc<Client> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the client by a fresh one (lazily connecting) when `e` says the allocator could
    /// not be reached; other errors are answers and change nothing.
    pub fn after_error(&self, e: &IpamError) {
        if e.kind() == ErrorKind::Unavailable {
            self.reconnect();
        }
    }

    pub fn reconnect(&self) {
        // The endpoints were accepted by `new`, so this cannot fail.
        if let Ok(fresh) = Client::new(self.endpoints.clone(), self.config.clone()) {
            debug!("reconnecting to the allocator");
            *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
        }
    }
}
