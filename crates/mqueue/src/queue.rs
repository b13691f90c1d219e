//! The work queue: leases, acks, redelivery and dead letters.
