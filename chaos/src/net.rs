//! Network faults: nftables rules inside each node's network namespace.
//!
//! A fault is a set of blocked directed links `(from, to)`: packets from `from`'s address are
//! dropped on arrival in `to`'s namespace. A symmetric partition blocks both directions of a
//! link, a one-way fault only one. Clients (in the root namespace) are never blocked: a
//! partitioned node keeps taking requests it cannot commit, which is the interesting case.
//! Each change rewrites the whole `inet chaos` table of every namespace in one `nft` transaction.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

/// The namespaces and addresses of the nodes, by node index.
#[derive(Clone, Debug)]
pub struct Net {
    namespaces: Vec<String>,
    ips: Vec<String>,
    blocked: BTreeSet<(usize, usize)>,
}

/// A failed `nft` or `ip` invocation.
#[derive(Debug, thiserror::Error)]
#[error("{command}: {message}")]
pub struct NetError {
    command: String,
    message: String,
}

impl Net {
    pub fn new(namespaces: Vec<String>, ips: Vec<String>) -> Self {
        Net {
            namespaces,
            ips,
            blocked: BTreeSet::new(),
        }
    }

    /// Node count.
    pub fn len(&self) -> usize {
        self.ips.len()
    }

    /// True when there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.ips.is_empty()
    }

    /// The blocked directed links, for the fault log.
    pub fn blocked(&self) -> Vec<(usize, usize)> {
        self.blocked.iter().copied().collect()
    }

    /// Cuts every link between the two groups, both ways.
    pub fn partition(&mut self, a: &[usize], b: &[usize]) -> Result<(), NetError> {
        for &x in a {
            for &y in b {
                self.blocked.insert((x, y));
                self.blocked.insert((y, x));
            }
        }
        self.apply()
    }

    /// Drops everything `to` receives from the nodes in `from` (it can still send to them).
    pub fn block_inbound(&mut self, to: usize, from: &[usize]) -> Result<(), NetError> {
        for &x in from {
            self.blocked.insert((x, to));
        }
        self.apply()
    }

    /// Removes every rule.
    pub fn heal(&mut self) -> Result<(), NetError> {
        self.blocked.clear();
        self.apply()
    }

    fn apply(&self) -> Result<(), NetError> {
        for (to, ns) in self.namespaces.iter().enumerate() {
            let sources: Vec<&str> = self
                .blocked
                .iter()
                .filter(|(_, t)| *t == to)
                .map(|(f, _)| self.ips[*f].as_str())
                .collect();
            // "table …" then "delete table …" makes the delete succeed whether or not the table
            // exists; the whole script is one atomic nft transaction.
            let mut script = String::from("table inet chaos\ndelete table inet chaos\n");
            if !sources.is_empty() {
                script.push_str(&format!(
                    "table inet chaos {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    ip saddr {{ {} }} drop\n  }}\n}}\n",
                    sources.join(", ")
                ));
            }
            nft(ns, &script)?;
        }
        Ok(())
    }
}

fn nft(ns: &str, script: &str) -> Result<(), NetError> {
    let command = format!("ip netns exec {ns} nft -f -");
    let err = |message: String| NetError {
        command: command.clone(),
        message,
    };
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| err(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| err(e.to_string()))?;
    if !out.status.success() {
        return Err(err(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    Ok(())
}
