//! [`run`]: one parsed command → one client call → the text to print.

use std::io::Read;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use hc_api::types::{PoolSpec, Reservation, VlanSpec};
use serde::Serialize;

use crate::cli::{
    AllocationCmd, ClusterCmd, Command, LeaseCmd, NodeCmd, PoolCmd, ReleaseBy, ReservationCmd, UsageError, VlanCmd,
    parse_pool_spec,
};
use crate::client::Client;
use crate::failure::Failure;
use crate::output::{self, Format};

/// Runs `command` and returns what to print on standard output.
pub async fn run(client: &Client, format: Format, command: Command) -> Result<String, Failure> {
    let now = now_ms();
    match command {
        Command::Pool(cmd) => match cmd {
            PoolCmd::List => show(format, &client.list_pools().await?, |l| output::pools(l)),
            PoolCmd::Get { name } => show(format, &client.get_pool(&name).await?, output::pool),
            PoolCmd::Create(args) => {
                let spec = match &args.file {
                    Some(file) => read_pool_spec(file)?,
                    None => args.to_spec()?,
                };
                show(format, &client.create_pool(&spec).await?, output::pool)
            }
            PoolCmd::Update { file } => {
                let spec = read_pool_spec(&file)?;
                show(format, &client.update_pool(&spec).await?, output::pool)
            }
            PoolCmd::Delete { name, force } => {
                client.delete_pool(&name, force).await?;
                Ok(done(format, &format!("pool {name} deleted")))
            }
        },
        Command::Vlan(cmd) => match cmd {
            VlanCmd::List => show(format, &client.list_vlans().await?, |l| output::vlans(l)),
            VlanCmd::Create { id, name, nodes } => {
                let vlan = client.put_vlan(&VlanSpec { id, name, nodes }).await?;
                show(format, &vlan, |v| output::vlans(std::slice::from_ref(v)))
            }
            VlanCmd::Delete { id } => {
                client.delete_vlan(id).await?;
                Ok(done(format, &format!("VLAN {id} deleted")))
            }
        },
        Command::Reservation(cmd) => match cmd {
            ReservationCmd::List => show(format, &client.list_reservations().await?, |l| output::reservations(l)),
            ReservationCmd::Get { key } => {
                show(format, &client.get_reservation(&key).await?, |r| output::reservations(std::slice::from_ref(r)))
            }
            ReservationCmd::Create { key, pool, address } => {
                let r = client.put_reservation(&Reservation { key, pool, address }).await?;
                show(format, &r, |r| output::reservations(std::slice::from_ref(r)))
            }
            ReservationCmd::Delete { key } => {
                client.delete_reservation(&key).await?;
                Ok(done(format, &format!("reservation {key} deleted")))
            }
        },
        Command::Allocation(cmd) => match cmd {
            AllocationCmd::List { pool, node, namespace } => {
                let list = client.list_allocations(pool.as_deref(), node.as_deref(), namespace.as_deref()).await?;
                show(format, &list, |l| output::allocations(l, now))
            }
            AllocationCmd::Get { address } => {
                show(format, &client.get_allocation(address).await?, |a| output::allocation(a, now))
            }
            AllocationCmd::Allocate(args) => {
                let request = args.to_request()?;
                show(format, &client.allocate(&request).await?, |a| output::allocated(a, now))
            }
            AllocationCmd::Release(args) => {
                let released = match args.to_release()? {
                    ReleaseBy::Address(address) => client.release_address(address).await?,
                    ReleaseBy::Target(target) => client.release(&target).await?,
                };
                show(format, &released, |r| output::released(r, now))
            }
        },
        Command::Lease(LeaseCmd::List) => show(format, &client.list_leases().await?, |l| output::leases(l, now)),
        Command::Node(NodeCmd::Gone { node }) => {
            show(format, &client.node_gone(&node).await?, |r| output::released(r, now))
        }
        Command::Cluster(cmd) => {
            let status = match cmd {
                ClusterCmd::Status => client.cluster_status().await?,
                ClusterCmd::AddLearner { id, grpc_addr, rest_addr } => {
                    client.add_learner(id, &grpc_addr, &rest_addr).await?
                }
                ClusterCmd::Promote { id } => client.promote_voter(id).await?,
                ClusterCmd::Remove { id } => client.remove_member(id).await?,
                ClusterCmd::Snapshot => client.snapshot_now().await?,
            };
            show(format, &status, output::cluster)
        }
    }
}

/// The reply as JSON, or as `table` renders it.
fn show<T: Serialize>(format: Format, value: &T, table: impl FnOnce(&T) -> String) -> Result<String, Failure> {
    match format {
        Format::Json => Ok(output::json(value)?),
        Format::Table => Ok(table(value)),
    }
}

/// For calls whose reply is empty (204): a confirmation for people, nothing for JSON readers.
fn done(format: Format, message: &str) -> String {
    match format {
        Format::Json => String::new(),
        Format::Table => format!("{message}\n"),
    }
}

/// A PoolSpec from a JSON file, or from standard input for `-`.
fn read_pool_spec(path: &Path) -> Result<PoolSpec, Failure> {
    let (text, origin) = if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| UsageError(format!("cannot read standard input: {e}")))?;
        (text, "standard input".to_owned())
    } else {
        let text =
            std::fs::read_to_string(path).map_err(|e| UsageError(format!("cannot read {}: {e}", path.display())))?;
        (text, path.display().to_string())
    };
    Ok(parse_pool_spec(&text, &origin)?)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
