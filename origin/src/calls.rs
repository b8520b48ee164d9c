//! `tern calls`: call records from the store (issue 6; being built).

#[derive(clap::Args)]
pub struct CallsArgs {}

pub fn run(_args: CallsArgs) -> anyhow::Result<()> {
    anyhow::bail!("call records are not built yet")
}
