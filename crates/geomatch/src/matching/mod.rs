//! Assignment of requests to drivers: greedy nearest and batched minimum-cost matching.
