//! infra-mqueue: an order fans out to payment, inventory and email; the email consumer
//! crashes before its ack and gets the order again after a restart; a poison order ends in the
//! dead-letter topic instead of looping forever; a burst of orders goes in and out in batches.

use std::error::Error;
use std::path::PathBuf;
use std::time::Duration;

use infra_common::ManualClock;
use infra_mqueue::queue::{Delivery, QueueOptions, WorkQueue};

const CONSUMERS: [&str; 3] = ["payment", "inventory", "email"];
const LEASE: Duration = Duration::from_secs(30);
const MAX_DELIVERIES: u32 = 3;

/// A folder of its own under the system's temporary directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self, Box<dyn Error>> {
        let dir = std::env::temp_dir().join(format!("infra-tour-mqueue-{}", std::process::id()));
        // A leftover of an earlier run with the same process id holds nothing we need.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn open(scratch: &Scratch, name: &str, clock: &ManualClock) -> Result<WorkQueue, Box<dyn Error>> {
    let options = QueueOptions::default()
        .visibility_timeout(LEASE)
        .max_deliveries(MAX_DELIVERIES);
    Ok(WorkQueue::open_with_clock(
        &scratch.0.join(name),
        options,
        clock.clone(),
    )?)
}

pub(crate) fn run() -> Result<(), Box<dyn Error>> {
    let scratch = Scratch::new()?;
    let clock = ManualClock::new();
    let mut queues = Vec::new();
    for name in CONSUMERS {
        queues.push((name, open(&scratch, name, &clock)?));
    }

    // The checkout returns as soon as the order is durably in every consumer's queue.
    let order = b"order 1001: 2 x espresso beans, ship to Lyon".as_slice();
    for (_, queue) in &queues {
        queue.send(order)?;
    }
    println!(
        "order 1001 stored (fsync'd) in {} durable queues; checkout returned",
        queues.len()
    );

    for (name, queue) in &queues[..2] {
        let delivery = queue.try_receive()?.ok_or("the order is ready")?;
        queue.ack(&delivery)?;
        println!(
            "{name:>9}: processed and acked (attempt {})",
            delivery.attempt()
        );
    }

    // The email consumer takes the order, then its process dies before the ack.
    let (_, email) = queues.pop().ok_or("three queues")?;
    let lost = email.try_receive()?.ok_or("the order is ready")?;
    drop(lost);
    drop(email);
    println!("    email: crashed after receiving, before its ack");
    let email = open(&scratch, "email", &clock)?;
    let again = email
        .try_receive()?
        .ok_or("redelivered after the restart")?;
    if again.payload() != order {
        return Err("the redelivered order differs".into());
    }
    email.ack(&again)?;
    println!(
        "    email: restarted, got order 1001 again (attempt {}), sent the mail, acked",
        again.attempt()
    );

    // A poison order: every attempt fails, and the consumer gives it back.
    email.send(b"order 1002: {\"qty\": \xff}".as_slice())?;
    let mut attempts = 0;
    while let Some(delivery) = email.try_receive()? {
        attempts += 1;
        email.nack(&delivery, Duration::ZERO)?;
    }
    let dead = email.dead_letters(0, 10)?;
    let stats = email.stats();
    println!(
        "    email: poison order 1002 failed {attempts} times, then went to the dead-letter topic \
         ({} dead letter, {} unsettled)",
        dead.len(),
        stats.unsettled
    );
    if dead.len() != 1 || stats.unsettled != 0 {
        return Err("the poison order should be the one dead letter".into());
    }

    // A flash sale: 50 orders in one batch send (written in order, made durable together),
    // taken and acked by the consumer up to 20 at a time.
    let burst: Vec<String> = (2000..2050).map(|n| format!("order {n}")).collect();
    let sent = email.send_many(burst.iter().map(String::as_bytes));
    if sent.iter().any(Result::is_err) {
        return Err("every order of the burst should be stored".into());
    }
    let (mut drained, mut batches) = (0, 0);
    loop {
        let batch = email.try_receive_many(20)?;
        if batch.is_empty() {
            break;
        }
        for acked in email.ack_many(batch.iter().map(Delivery::receipt)) {
            acked?;
        }
        drained += batch.len();
        batches += 1;
    }
    println!(
        "    email: a burst of {} orders sent in one call, drained and acked in {batches} batches",
        sent.len()
    );
    if drained != burst.len() {
        return Err("the burst should drain completely".into());
    }
    Ok(())
}
