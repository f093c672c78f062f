//! The gRPC client's error mapping: openraft must back off from a peer that is down.

use openraft::Vote;
use openraft::errors::RPCError;
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::VoteRequest;
use std::time::Duration;

use crate::raft::{NetworkFactory, NodeInfo};

#[tokio::test]
async fn peer_that_refuses_connections_is_unreachable() -> anyhow::Result<()> {
    // A port that was just free: nothing listens on it once the listener is dropped.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    drop(listener);

    let node = NodeInfo { raft_addr: addr.to_string(), rest_addr: String::new() };
    let mut peer = NetworkFactory::new(1).new_client(2, &node).await;
    let request = VoteRequest::new(Vote::new(1, 1), None);
    let result = peer.vote(request, RPCOption::new(Duration::from_secs(5))).await;
    assert!(matches!(result, Err(RPCError::Unreachable(_))), "got {result:?}");
    Ok(())
}

#[tokio::test]
async fn unparsable_address_is_unreachable() -> anyhow::Result<()> {
    let node = NodeInfo { raft_addr: "not an address".to_owned(), rest_addr: String::new() };
    let mut peer = NetworkFactory::new(1).new_client(2, &node).await;
    let request = VoteRequest::new(Vote::new(1, 1), None);
    let result = peer.vote(request, RPCOption::new(Duration::from_secs(5))).await;
    assert!(matches!(result, Err(RPCError::Unreachable(_))), "got {result:?}");
    Ok(())
}
