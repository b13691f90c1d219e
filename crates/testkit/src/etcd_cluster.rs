//! A private etcd cluster of several members on loopback.

use std::io;
use std::path::Path;
use std::time::Instant;

use crate::etcd::{self, Member};
use crate::process::{self, LAUNCH_ATTEMPTS, POLL_INTERVAL, Port, STARTUP_TIMEOUT, ServerProcess};
use crate::server::Server;
use crate::{Etcd, EtcdServer};

/// Several `etcd` members forming one cluster on loopback, each with its own data directory.
///
/// The members are ordinary [`EtcdServer`]s: [`member_mut`](Self::member_mut) gives one to
/// [`kill`](Server::kill), [`restart`](Server::restart), [`pause`](Server::pause) or
/// [`resume`](Server::resume), and [`leader`](Self::leader) waits until the survivors agree on
/// a leader again. All members are stopped and their data removed on drop.
///
/// ```no_run
/// use infra_testkit::EtcdCluster;
///
/// let Some(mut cluster) = EtcdCluster::start(3) else { return };
/// let endpoints = cluster.endpoints(); // give these to the client under test
/// let old = cluster.leader().unwrap();
/// cluster.member_mut(old).kill();
/// let new = cluster.leader().unwrap(); // waits for the election
/// assert_ne!(old, new);
/// ```
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<EtcdServer>,
}

impl EtcdCluster {
    /// Starts a cluster of `members` members (static `--initial-cluster`) and waits until every
    /// member reports itself healthy. Prints a skip line and returns `None` when `etcd` is not
    /// installed, like [`EtcdServer::start`].
    ///
    /// # Panics
    ///
    /// If `members` is zero, or if the binary exists but the cluster cannot be started.
    pub fn start(members: usize) -> Option<Self> {
        assert!(members > 0, "an etcd cluster needs at least one member");
        let binary = process::locate_or_skip("etcd", "etcd cluster")?;
        let mut last_error = None;
        // The membership is fixed at start, so a port lost to another process means starting
        // every member again on fresh ports.
        for _ in 0..LAUNCH_ATTEMPTS {
            match launch(&binary, members) {
                Ok(members) => return Some(Self { members }),
                Err(error) => last_error = Some(error),
            }
        }
        let error = last_error.map_or_else(String::new, |error| error.to_string());
        panic!("etcd cluster did not start: {error}");
    }

    /// The members, in a fixed order that [`leader`](Self::leader) indexes into.
    pub fn members(&self) -> &[EtcdServer] {
        &self.members
    }

    /// One member, to kill, restart, pause or resume it.
    ///
    /// # Panics
    ///
    /// If `index` is not below the number of members.
    pub fn member_mut(&mut self, index: usize) -> &mut EtcdServer {
        &mut self.members[index]
    }

    /// Every member's client URL (`http://127.0.0.1:PORT`), the endpoint list etcd clients take.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(EtcdServer::url).collect()
    }

    /// Stops every member (SIGTERM), then starts them all again on their ports and data
    /// directories, as after an outage of the whole cluster, and waits until each reports
    /// itself healthy. The cluster keeps its data: its keys, leases and revisions.
    ///
    /// # Errors
    ///
    /// If a member's port was taken while it was down, or a member does not come back.
    pub fn restart_all(&mut self) -> io::Result<()> {
        for member in &mut self.members {
            member.stop();
        }
        // None can be healthy before a quorum runs: spawn them all, then wait for each.
        for member in &mut self.members {
            member.spawn_again()?;
        }
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        for member in &mut self.members {
            member.wait_ready(deadline)?;
        }
        Ok(())
    }

    /// The index of the current leader, waiting (up to a minute) until there is one.
    ///
    /// A leader is accepted when a majority of the members answer, all that answer name the
    /// same leader, and that leader answers too. A killed or paused member cannot answer, so
    /// after killing the leader this returns only once the others have elected a new one.
    pub fn leader(&self) -> io::Result<usize> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let statuses: Vec<Option<etcd::Status>> = self
                .members
                .iter()
                // A stopped member's port may belong to another process by now.
                .map(|member| {
                    member.running_pid()?;
                    etcd::status(member.addr()).ok()
                })
                .collect();
            if let Some(leader) = agreed_leader(&statuses) {
                return Ok(leader);
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no agreed leader; members said {statuses:?}"),
                ));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

/// The index of the member that a majority of all members, and every member that answered,
/// name as leader, if that member answered too.
fn agreed_leader(statuses: &[Option<etcd::Status>]) -> Option<usize> {
    let answered: Vec<&etcd::Status> = statuses.iter().flatten().collect();
    if answered.len() * 2 <= statuses.len() {
        return None;
    }
    let leader = &answered.first()?.leader;
    if answered.iter().any(|status| &status.leader != leader) {
        return None;
    }
    statuses
        .iter()
        .position(|status| status.as_ref().is_some_and(|s| &s.member_id == leader))
}

/// Prepares every member, spawns them all (none can be healthy before a quorum runs), then
/// waits for each.
fn launch(binary: &Path, count: usize) -> io::Result<Vec<EtcdServer>> {
    let members = (0..count)
        .map(|_| {
            Ok(Member::new(
                etcd::unique_name("member"),
                Port::free()?,
                Port::free()?,
            ))
        })
        .collect::<io::Result<Vec<Member>>>()?;
    let cluster: Vec<String> = members.iter().map(Member::initial_cluster_entry).collect();
    let cluster = cluster.join(",");
    let token = etcd::unique_name("cluster");
    let mut processes = members
        .into_iter()
        .map(|member| {
            ServerProcess::prepare("infra-etcd-cluster-", |dir| {
                Ok(member.spec(binary, dir, &cluster, &token))
            })
        })
        .collect::<io::Result<Vec<ServerProcess>>>()?;
    for process in &mut processes {
        process.spawn()?;
    }
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    for process in &mut processes {
        process.wait_ready(deadline)?;
    }
    Ok(processes.into_iter().map(Server::<Etcd>::new).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(member_id: &str, leader: &str) -> Option<etcd::Status> {
        Some(etcd::Status {
            member_id: member_id.into(),
            leader: leader.into(),
        })
    }

    #[test]
    fn a_leader_needs_a_majority_agreeing_and_answering() {
        let all_agree = [status("a", "b"), status("b", "b"), status("c", "b")];
        assert_eq!(agreed_leader(&all_agree), Some(1));
        let leader_dead = [status("a", "b"), None, status("c", "b")];
        assert_eq!(agreed_leader(&leader_dead), None, "a dead leader is stale");
        let split = [status("a", "a"), status("b", "b"), status("c", "b")];
        assert_eq!(agreed_leader(&split), None);
        let minority = [None, status("b", "b"), None];
        assert_eq!(agreed_leader(&minority), None);
        let re_elected = [None, status("b", "c"), status("c", "c")];
        assert_eq!(agreed_leader(&re_elected), Some(2));
        assert_eq!(agreed_leader(&[]), None);
    }
}
