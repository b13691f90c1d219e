//! The HTTP layer: RFC 9111 freshness and storability, Vary, revalidation, RFC 5861, coalescing and purge.
