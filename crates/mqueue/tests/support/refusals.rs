//! Refusal checks both work-queue backends must pass, written once: the embedded queue
//! (`tests/queue.rs`, in memory and durable) and the Redis Streams queue (`tests/redis.rs`)
//! each implement [`Backend`] over their own API and run the same script.

use infra_mqueue::Error;
use infra_mqueue::queue::Receipt;

/// The calls the scripts need, as each backend makes them.
pub(crate) trait Backend {
    /// Sends a message; panics if the send fails.
    fn send(&self, payload: &'static [u8]);
    /// Receives the next message's receipt; panics if none is available.
    fn receive(&self) -> Receipt;
    fn ack(&self, receipt: Receipt) -> Result<(), Error>;
    fn nack(&self, receipt: Receipt) -> Result<(), Error>;
    fn extend(&self, receipt: Receipt) -> Result<(), Error>;
    fn term(&self, receipt: Receipt) -> Result<(), Error>;
}

/// One of the four settle calls.
type SettleCall<B> = fn(&B, Receipt) -> Result<(), Error>;

/// Every settle call with `receipt` is refused as an attempt never made, and changes nothing.
fn assert_never_made<B: Backend>(backend: &B, receipt: Receipt) {
    let calls: [(&str, SettleCall<B>); 4] = [
        ("ack", B::ack),
        ("nack", B::nack),
        ("extend", B::extend),
        ("term", B::term),
    ];
    for (name, call) in calls {
        let got = call(backend, receipt);
        assert!(
            matches!(got, Err(Error::UnknownDelivery { offset, attempt })
                if offset == receipt.offset() && attempt == receipt.attempt()),
            "{name} of offset {} attempt {}: {got:?}",
            receipt.offset(),
            receipt.attempt()
        );
    }
}

/// Attempts start at 1: a receipt naming attempt 0, or an attempt above the deliveries made,
/// names a delivery that never happened, whatever state the message is in (never delivered,
/// leased, nacked); a settled message answers `AlreadySettled` whatever the attempt.
pub(crate) fn attempts_never_made_are_unknown_deliveries(backend: &impl Backend) {
    backend.send(b"first");
    backend.send(b"second");
    // Offset 1 is stored and never delivered; offset 2 was never sent.
    for attempt in [0, 1] {
        assert_never_made(backend, Receipt::new(1, attempt));
        assert_never_made(backend, Receipt::new(2, attempt));
    }
    let first = backend.receive();
    assert_eq!((first.offset(), first.attempt()), (0, 1));
    // Leased by attempt 1.
    assert_never_made(backend, Receipt::new(0, 0));
    assert_never_made(backend, Receipt::new(0, 2));
    // Given back by attempt 1, which is then refused as no longer leased.
    backend.nack(first).unwrap();
    assert_never_made(backend, Receipt::new(0, 0));
    assert_never_made(backend, Receipt::new(0, 2));
    assert!(matches!(
        backend.ack(first),
        Err(Error::NotLeased {
            offset: 0,
            attempt: 1
        })
    ));
    // Delivered again: attempt 1 is stale, and the refusals above changed nothing.
    let again = backend.receive();
    assert_eq!((again.offset(), again.attempt()), (0, 2));
    assert_never_made(backend, Receipt::new(0, 0));
    assert!(matches!(
        backend.ack(first),
        Err(Error::Redelivered {
            offset: 0,
            attempt: 1,
            current: 2
        })
    ));
    backend.ack(again).unwrap();
    for attempt in [0, 1, 2, 3] {
        assert!(matches!(
            backend.ack(Receipt::new(0, attempt)),
            Err(Error::AlreadySettled { offset: 0 })
        ));
    }
}
