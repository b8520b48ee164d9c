//! `tern backup` / `tern restore` (issue 6; being built).

#[derive(clap::Args)]
pub struct BackupArgs {}

#[derive(clap::Args)]
pub struct RestoreArgs {}

pub fn run(_args: BackupArgs) -> anyhow::Result<()> {
    anyhow::bail!("backups are not built yet")
}

pub fn restore(_args: RestoreArgs) -> anyhow::Result<()> {
    anyhow::bail!("backups are not built yet")
}
