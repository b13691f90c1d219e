//! An exhaustive search of the fencing protocol itself, apart from any implementation, and a
//! replay of its counterexample against the crate's own [`Fence`].
//!
//! Two clients each want to increment a value in a storage once: take the lock, read, compute,
//! write, release. A lock service grants leases with growing tokens and frees a lock when its
//! lease ends. Clients check their lease before each step, but may pause for any number of
//! clock ticks between the check and the moment their request reaches the storage — a GC
//! pause or a slow network. The search visits every interleaving of client steps and ticks.
//!
//! With a fence in the storage (refuse an operation whose token is lower than one already
//! seen), no reachable state has accepted a stale write and every finished run's value equals
//! the number of accepted writes. Without the fence, the search must find a run where a stale
//! write is accepted and an increment is lost.
//!
//! The search checks the protocol with a fence modelled here (refuse a token below the highest
//! seen), not the crate's code. What ties it to the crate: the unfenced counterexample's
//! requests, as they reach the storage, are replayed through the crate's real [`Fence`], which
//! must refuse the stale write the unfenced storage accepted.
#![cfg(not(infra_loom))]

use std::collections::{HashSet, VecDeque};

use infra_dlock::{Error, Fence, FencingToken};

/// How many ticks a lease lasts.
const LEASE: u8 = 2;
/// The last tick the clock reaches; enough for one client to pause past a whole lease.
const END_OF_TIME: u8 = 7;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Client {
    Idle,
    /// Holds a grant; about to read.
    Granted {
        token: u8,
        expires: u8,
    },
    /// Checked its lease, the read is on its way to the storage.
    Reading {
        token: u8,
        expires: u8,
    },
    /// Read `value`; about to check its lease and send the write.
    Read {
        token: u8,
        expires: u8,
        value: u8,
    },
    /// Checked its lease, the write of `value` is on its way to the storage.
    Writing {
        token: u8,
        value: u8,
    },
    /// Finished: wrote, was refused, or gave up after seeing its lease end.
    Done,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct World {
    now: u8,
    /// The lock service: the current grant's holder, token and expiry, and the last token.
    grant: Option<(usize, u8, u8)>,
    last_token: u8,
    clients: [Client; 2],
    /// The storage's value and, with a fence, the highest token it has seen.
    value: u8,
    fence_mark: u8,
    /// For the checks, not the protocol: the highest token among accepted operations,
    /// accepted writes, and whether a write below that token was ever accepted.
    accepted_mark: u8,
    accepted_writes: u8,
    stale_write_accepted: bool,
}

impl World {
    fn start() -> Self {
        Self {
            now: 0,
            grant: None,
            last_token: 0,
            clients: [Client::Idle; 2],
            value: 0,
            fence_mark: 0,
            accepted_mark: 0,
            accepted_writes: 0,
            stale_write_accepted: false,
        }
    }

    fn lock_is_free(&self) -> bool {
        self.grant.is_none_or(|(_, _, expires)| self.now >= expires)
    }

    /// The storage's judgement of an operation under `token`; advances the fence if admitted.
    fn storage_admits(&mut self, token: u8, fenced: bool) -> bool {
        if fenced {
            if token < self.fence_mark {
                return false;
            }
            self.fence_mark = token;
        }
        true
    }

    fn accepted(&mut self, token: u8, write: bool) {
        if write {
            self.accepted_writes += 1;
            if token < self.accepted_mark {
                self.stale_write_accepted = true;
            }
        }
        self.accepted_mark = self.accepted_mark.max(token);
    }

    /// Every state one step away, each with a description of the step.
    fn successors(&self, fenced: bool) -> Vec<(String, World)> {
        let mut next = Vec::new();
        if self.now < END_OF_TIME {
            let mut w = self.clone();
            w.now += 1;
            next.push(("tick".to_owned(), w));
        }
        for i in 0..2 {
            let mut w = self.clone();
            let step = match self.clients[i] {
                Client::Idle if self.lock_is_free() => {
                    w.last_token += 1;
                    let expires = self.now + LEASE;
                    w.grant = Some((i, w.last_token, expires));
                    w.clients[i] = Client::Granted {
                        token: w.last_token,
                        expires,
                    };
                    format!("client {i} is granted token {}", w.last_token)
                }
                Client::Idle | Client::Done => continue,
                Client::Granted { token, expires } => {
                    if self.now >= expires {
                        w.clients[i] = Client::Done;
                        format!("client {i} sees its lease ended and gives up")
                    } else {
                        w.clients[i] = Client::Reading { token, expires };
                        format!("client {i} sends a read with token {token}")
                    }
                }
                Client::Reading { token, expires } => {
                    if w.storage_admits(token, fenced) {
                        w.accepted(token, false);
                        w.clients[i] = Client::Read {
                            token,
                            expires,
                            value: self.value,
                        };
                        format!(
                            "storage answers client {i}'s read: {} (token {token})",
                            self.value
                        )
                    } else {
                        w.clients[i] = Client::Done;
                        format!("storage refuses client {i}'s read with token {token}")
                    }
                }
                Client::Read {
                    token,
                    expires,
                    value,
                } => {
                    if self.now >= expires {
                        w.clients[i] = Client::Done;
                        format!("client {i} sees its lease ended and gives up")
                    } else {
                        w.clients[i] = Client::Writing {
                            token,
                            value: value + 1,
                        };
                        format!(
                            "client {i} sends a write of {} with token {token}",
                            value + 1
                        )
                    }
                }
                Client::Writing { token, value } => {
                    w.clients[i] = Client::Done;
                    if w.storage_admits(token, fenced) {
                        w.accepted(token, true);
                        w.value = value;
                        if w.grant
                            .is_some_and(|(holder, t, _)| holder == i && t == token)
                        {
                            w.grant = None; // the release
                        }
                        format!("storage accepts client {i}'s write of {value} (token {token})")
                    } else {
                        format!("storage refuses client {i}'s write with token {token}")
                    }
                }
            };
            next.push((step, w));
        }
        next
    }
}

struct Search {
    states: usize,
    /// The shortest run to a state that accepted a stale write, if any.
    stale_write: Option<Vec<String>>,
    /// The shortest run that finished with fewer increments than accepted writes, if any.
    lost_update: Option<Vec<String>>,
}

/// Breadth-first over every reachable state; runs are kept for the counterexamples.
fn search(fenced: bool) -> Search {
    let start = World::start();
    let mut seen = HashSet::from([start.clone()]);
    let mut queue = VecDeque::from([(start, Vec::new())]);
    let mut result = Search {
        states: 0,
        stale_write: None,
        lost_update: None,
    };
    while let Some((world, run)) = queue.pop_front() {
        result.states += 1;
        if world.stale_write_accepted && result.stale_write.is_none() {
            result.stale_write = Some(run.clone());
        }
        let finished = world.clients.iter().all(|c| *c == Client::Done);
        if finished && world.value != world.accepted_writes && result.lost_update.is_none() {
            result.lost_update = Some(run.clone());
        }
        for (step, next) in world.successors(fenced) {
            if seen.insert(next.clone()) {
                let mut longer = run.clone();
                longer.push(step);
                queue.push_back((next, longer));
            }
        }
    }
    result
}

#[test]
fn with_a_fence_no_stale_write_is_accepted_and_no_increment_is_lost() {
    let search = search(true);
    assert!(
        search.states > 100,
        "searched only {} states",
        search.states
    );
    assert_eq!(search.stale_write, None);
    assert_eq!(search.lost_update, None);
}

#[test]
fn without_a_fence_the_search_finds_a_stale_write_and_a_lost_increment() {
    let search = search(false);
    let run = search
        .stale_write
        .expect("without a fence a paused client's write must get through");
    // The run shows the classic story: a client pauses past its lease, the other client is
    // granted the lock and writes, then the paused client's write lands.
    assert!(run.iter().any(|step| step.contains("is granted token 2")));
    assert!(
        run.last().is_some_and(|step| step.contains("(token 1)")),
        "{run:#?}"
    );
    assert!(search.lost_update.is_some());
}

#[test]
fn the_fenced_search_reaches_requests_the_fence_refuses() {
    // Not a vacuous pass: the fenced search does reach runs where a paused client's request
    // arrives after a newer token, and the fence refuses it.
    let fenced = World::start();
    let mut refused = false;
    let mut seen = HashSet::from([fenced.clone()]);
    let mut queue = VecDeque::from([fenced]);
    while let Some(world) = queue.pop_front() {
        for (step, next) in world.successors(true) {
            refused |= step.starts_with("storage refuses");
            if seen.insert(next.clone()) {
                queue.push_back(next);
            }
        }
    }
    assert!(refused);
}

/// The tokens of the requests a run's storage accepted, in the order they arrived.
fn tokens_at_the_storage(run: &[String]) -> Vec<u64> {
    run.iter()
        .filter(|step| step.starts_with("storage answers") || step.starts_with("storage accepts"))
        .map(|step| {
            let (_, token) = step.rsplit_once("(token ").expect(step);
            token.trim_end_matches(')').parse().expect(step)
        })
        .collect()
}

#[test]
fn the_crates_fence_refuses_the_stale_write_of_the_unfenced_counterexample() {
    let run = search(false)
        .stale_write
        .expect("without a fence a paused client's write must get through");
    let tokens = tokens_at_the_storage(&run);
    let (&stale, earlier) = tokens.split_last().expect("the run reaches the storage");
    let fence = Fence::new();
    for &token in earlier {
        fence
            .admit("value", "lock", FencingToken::new(token))
            .unwrap();
    }
    assert!(
        matches!(
            fence.admit("value", "lock", FencingToken::new(stale)),
            Err(Error::StaleToken { .. })
        ),
        "the crate's fence admitted the stale write of {run:#?}"
    );
}
