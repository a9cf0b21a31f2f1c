//! `kvclient --command backup --out FILE`: writes the backup stream to a file beside FILE,
//! checks it whole (as `host restore` will), makes it durable, then moves it to FILE. A stream
//! cut short or damaged never lands at FILE.

use anyhow::{Context, Result};
use host::proto;
use std::io::Write;
use std::path::Path;

/// Saves the backup `chunks` to `out`; prints what it holds.
pub async fn save(mut chunks: tonic::Streaming<proto::BackupChunk>, out: &Path) -> Result<()> {
    let mut partial = out.as_os_str().to_owned();
    partial.push(".partial");
    let partial = std::path::PathBuf::from(partial);
    let mut file = std::fs::File::create(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    let mut bytes = Vec::new();
    while let Some(chunk) = chunks.message().await? {
        file.write_all(&chunk.data)
            .with_context(|| format!("writing {}", partial.display()))?;
        bytes.extend_from_slice(&chunk.data);
    }
    let header = match host::store::backup::read(&bytes) {
        Ok((header, _)) => header,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            anyhow::bail!("the backup received is not whole ({e}); nothing was saved");
        }
    };
    file.sync_all()
        .with_context(|| format!("syncing {}", partial.display()))?;
    std::fs::rename(&partial, out).with_context(|| format!("moving it to {}", out.display()))?;
    println!(
        "backup of log index {} (term {}), module sha256:{}, {} bytes, made by {}: {}",
        header.index,
        header.term,
        &header.module_hash[..12.min(header.module_hash.len())],
        bytes.len(),
        header.made_by,
        out.display()
    );
    Ok(())
}
