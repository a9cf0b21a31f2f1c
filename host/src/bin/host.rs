//! The raftwasm node binary (the Raft node itself arrives with the cluster work).
fn main() {}
